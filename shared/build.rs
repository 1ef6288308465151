//! `embed_migrations!` reads ../migrations at compile time, but Cargo only watches the files it
//! already embedded: without this, a new migration directory is missed by incremental builds.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
