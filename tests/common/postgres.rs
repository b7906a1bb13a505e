//! A throwaway PostgreSQL cluster for tests: `initdb` into a temp dir, `postgres` on its own
//! loopback port with its socket in that dir, as `nobody` when we are root (postgres refuses
//! root). Missing binaries skip the test with one printed line, unless KCAP_REQUIRE_POSTGRES=1
//! (CI), which makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running cluster; dropping it stops it and deletes its files.
pub struct Cluster {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding initdb and postgres (or $KCAP_PG_BIN).
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KCAP_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn as_postgres_user(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Cluster {
    /// Starts a cluster, or returns `None` after printing why the test is skipped.
    pub fn start(test: &str) -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            let why = "PostgreSQL binaries not found (looked in /usr/lib/postgresql/*/bin; set KCAP_PG_BIN)";
            if std::env::var("KCAP_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("{test}: {why}, and KCAP_REQUIRE_POSTGRES=1");
            }
            println!("skipped: {test}: {why}");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("kcap-pg").tempdir().unwrap();
        // SAFETY: chown of a path we own, to nobody, with a NUL-terminated copy of the path.
        unsafe {
            if libc::geteuid() == 0 {
                let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
                assert_eq!(
                    libc::chown(path.as_ptr(), 65534, 65534),
                    0,
                    "chown the cluster dir"
                );
            }
        }
        let data = dir.path().join("data");
        let out = as_postgres_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "kcap",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = super::free_port().port();
        let child = as_postgres_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            // Tests kill the server process, not the machine: fsync adds nothing but time.
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let cluster = Cluster { port, child, dir };
        let started = Instant::now();
        let url = cluster.url("postgres");
        let connects = || {
            std::thread::scope(|s| {
                s.spawn(|| ::postgres::Client::connect(&url, ::postgres::NoTls).is_ok())
                    .join()
                    .unwrap_or(false)
            })
        };
        while !connects() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "postgres did not accept connections within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(cluster)
    }

    /// URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://kcap@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub fn database(&self) -> String {
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        let admin = self.url("postgres");
        // The synchronous client runs its own runtime: keep it off any async test's thread.
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut admin = ::postgres::Client::connect(&admin, ::postgres::NoTls).unwrap();
                admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
            })
            .join()
            .unwrap()
        });
        self.url(&name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown; nothing here needs to survive.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
    }
}
