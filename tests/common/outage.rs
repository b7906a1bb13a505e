//! Tests that begin with the server down: a scratch environment holding the fixture session,
//! and the loopback address the test starts its server on once the outage is over.

use std::net::SocketAddr;
use std::path::PathBuf;

use kcap::ids::SessionId;

use super::{free_port, transcript, Env};

/// A new environment holding the fixture session, and an address with nothing listening on it
/// yet: `(env, addr, url, content, sid, path)`, with `url` the server URL of `addr` and
/// `content` the transcript as written to `path`.
pub fn server_down() -> (Env, SocketAddr, String, Vec<u8>, SessionId, PathBuf) {
    let env = Env::new();
    let addr = free_port();
    let url = format!("http://{addr}");
    let content = transcript();
    let (sid, path) = env.session(&content);
    (env, addr, url, content, sid, path)
}
