//! The checkout's CSS and JavaScript, compiled into the binary (no Node build to run the
//! service), and a hash of them that page URLs carry (`?v=`), so browsers may cache a file for
//! a year and still fetch the new one the moment a release changes it.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

pub struct Asset {
    pub body: &'static str,
    pub content_type: &'static str,
}

const CSS: &str = include_str!("../../static/checkout.css");
const JS: &str = include_str!("../../static/checkout.js");
const OPS_CSS: &str = include_str!("../../static/ops.css");
const OPS_JS: &str = include_str!("../../static/ops.js");

pub fn find(name: &str) -> Option<Asset> {
    match name {
        "checkout.css" => Some(Asset {
            body: CSS,
            content_type: "text/css; charset=utf-8",
        }),
        "checkout.js" => Some(Asset {
            body: JS,
            content_type: "text/javascript; charset=utf-8",
        }),
        "ops.css" => Some(Asset {
            body: OPS_CSS,
            content_type: "text/css; charset=utf-8",
        }),
        "ops.js" => Some(Asset {
            body: OPS_JS,
            content_type: "text/javascript; charset=utf-8",
        }),
        _ => None,
    }
}

static VERSION: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::new()
        .chain_update(CSS)
        .chain_update([0])
        .chain_update(JS)
        .chain_update([0])
        .chain_update(OPS_CSS)
        .chain_update([0])
        .chain_update(OPS_JS)
        .finalize();
    hex::encode(&digest[..6])
});

/// Changes whenever any asset does.
pub fn version() -> &'static str {
    &VERSION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_found_by_name_with_their_types() {
        assert!(
            find("checkout.js")
                .unwrap()
                .content_type
                .starts_with("text/javascript")
        );
        assert!(
            find("checkout.css")
                .unwrap()
                .content_type
                .starts_with("text/css")
        );
        assert!(find("../Cargo.toml").is_none());
        assert_eq!(version().len(), 12);
    }
}
