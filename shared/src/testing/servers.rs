//! Servers a test starts for itself, each in a directory of its own that is removed with it:
//! a certificate authority ([`TestCa`], made with the `openssl` command), a private Postgres
//! cluster with TLS ([`PrivatePostgres`]), a redis-server with TLS ([`TlsRedis`]) and a
//! PgBouncer ([`PgBouncer`]). Postgres and PgBouncer refuse to run as root; when the tests
//! run as root they run as the `postgres` user (Debian's packages create it).

use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// A directory under the system's temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{what}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `program` as a user Postgres accepts: ourselves, or `postgres` when we are root.
fn as_service_user(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Gives `dir` (and what is in it) to the service user, when that is not us.
fn hand_over(dir: &Path) {
    if running_as_root() {
        run(Command::new("chown").arg("-R").arg("postgres:").arg(dir));
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The port of the Postgres at `DATABASE_URL` (what a PgBouncer of a test's own fronts).
pub fn postgres_port() -> u16 {
    let (url, _) = super::base_urls();
    url.split('?')
        .next()
        .and_then(|base| base.rsplit_once(':'))
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(5432)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what} did not listen on {port}: {log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A CA and one server certificate it signed, for `localhost` only (so a client that dials
/// `127.0.0.1` and checks the name must refuse it). ECDSA P-256, valid for two days.
pub struct TestCa {
    pub dir: TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        let dir = TempDir::new("test-ca");
        let p = |n: &str| dir.join(n);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let subject = format!("/CN=payments test CA {}", Uuid::new_v4().simple());
        run(Command::new("openssl")
            .args(["req", "-x509", "-days", "2", "-subj", &subject])
            .args(ec)
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.pem")));
        run(Command::new("openssl")
            .args(["req", "-subj", "/CN=localhost"])
            .args(ec)
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")));
        std::fs::write(
            p("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the extensions");
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.pem"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("server.ext"))
            .arg("-out")
            .arg(p("server.pem")));
        TestCa {
            ca_cert: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            dir,
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// The newest Postgres server programs installed (`/usr/lib/postgresql/<version>/bin`).
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres server programs under /usr/lib/postgresql")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb").1
}

/// A Postgres cluster of the test's own on a free port, with `ssl = on` and the certificate
/// `ca` signed; trust authentication for `postgres`. Stopped and removed on drop.
pub struct PrivatePostgres {
    pub port: u16,
    bin: PathBuf,
    dir: TempDir,
}

impl PrivatePostgres {
    pub fn start(ca: &TestCa) -> Self {
        let dir = TempDir::new("test-pg");
        let bin = postgres_bin();
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::copy(&ca.server_cert, &cert).expect("copy the certificate");
        std::fs::copy(&ca.server_key, &key).expect("copy the key");
        run(Command::new("chmod").arg("600").arg(&key));
        hand_over(&dir.0);
        run(as_service_user(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.join("data")));
        let port = free_port();
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c fsync=off",
            dir.0.display(),
            cert.display(),
            key.display()
        );
        run(as_service_user(&bin.join("pg_ctl"))
            .args(["-w", "-t", "60", "-D"])
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-o", &options, "start"]));
        PrivatePostgres { port, bin, dir }
    }

    /// `postgres://postgres@<host>:<port>/postgres` with `query` appended.
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_service_user(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A redis-server with TLS only (no plain port), its certificate signed by `ca`, clients not
/// asked for certificates. Killed and removed on drop.
pub struct TlsRedis {
    pub port: u16,
    child: Child,
    _dir: TempDir,
}

impl TlsRedis {
    pub fn start(ca: &TestCa) -> Self {
        let dir = TempDir::new("test-redis");
        let port = free_port();
        let log = dir.join("log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&ca.server_cert)
            .arg("--tls-key-file")
            .arg(&ca.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&ca.ca_cert)
            .args(["--tls-auth-clients", "no", "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir.0)
            .arg("--logfile")
            .arg(&log)
            .spawn()
            .expect("start redis-server (built with TLS)");
        wait_for_port(port, "redis-server", &log);
        TlsRedis {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// PgBouncer in `pool_mode` (`session` or `transaction`) in front of `127.0.0.1:<pg_port>`,
/// every database, trust authentication for `postgres`. Stopped and removed on drop.
pub struct PgBouncer {
    pub port: u16,
    dir: TempDir,
}

impl PgBouncer {
    pub fn start(pg_port: u16, pool_mode: &str, pool_size: u32) -> Self {
        let dir = TempDir::new("test-pgbouncer");
        let port = free_port();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").expect("write users");
        let config = format!(
            "[databases]\n* = host=127.0.0.1 port={pg_port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {users}\npool_mode = {pool_mode}\n\
             default_pool_size = {pool_size}\nmax_client_conn = 500\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {log}\npidfile = {pid}\n",
            users = dir.join("users.txt").display(),
            log = dir.join("log").display(),
            pid = dir.join("pid").display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), config).expect("write the config");
        hand_over(&dir.0);
        run(as_service_user(Path::new("/usr/sbin/pgbouncer"))
            .arg("-d")
            .arg(dir.join("pgbouncer.ini")));
        wait_for_port(port, "pgbouncer", &dir.join("log"));
        PgBouncer { port, dir }
    }

    /// `url` (a Postgres URL) with its host and port replaced by this PgBouncer's.
    pub fn url_for(&self, url: &str) -> String {
        let (_, name, query) = crate::db::split_database_url(url).expect("a URL with a path");
        let sep = if query.is_empty() { "" } else { "?" };
        format!(
            "postgres://postgres@127.0.0.1:{}/{name}{sep}{query}",
            self.port
        )
    }

    /// Its log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            // Its directory goes with the TempDir; give it a moment to let go of the files.
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.dir.join("pid").exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
