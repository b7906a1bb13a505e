//! A store sled finds corrupt is moved aside and rebuilt, and delivery carries on from the
//! server: nothing stays stuck on a broken local file.

mod capture_support;
mod common;

use capture_support::*;
use common::*;
use kcap::ids::SessionId;

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_store_is_moved_aside_and_delivery_carries_on() {
    let (env, server) = (Env::new(), server().await);
    let sid = SessionId::new_random();
    let content = synthetic_transcript(sid, 50, true);
    let path = kcap::config::transcript_path(&env.copilot_home, sid);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &content[..content.len() / 2]).unwrap();
    // A first session leaves a real store behind.
    env.store()
        .spawn_machine(
            sid,
            &path,
            kcap::machine::Timings::default(),
            kcap::config::now_ms(),
        )
        .unwrap();
    // Then a file sled checks on open is mangled. (A torn write in its log is caught by sled's
    // own checksums and cut off at recovery; this is what sled refuses to open at all.)
    let conf = env.kcap_home.join("store").join("conf");
    let mut bytes = std::fs::read(&conf).unwrap();
    for b in bytes.iter_mut() {
        *b ^= 0x5a;
    }
    std::fs::write(&conf, &bytes).unwrap();
    std::fs::write(&path, &content).unwrap();
    let out = env
        .kcap(&server.url())
        .args(["copilot-finalize", "--foreground", &sid.to_string()])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_exactly_once(&server, sid, &content);
    let log = env.log_of(sid);
    assert!(
        log.contains("the store is corrupt; moved aside and rebuilt"),
        "{log}"
    );
    let aside: Vec<_> = std::fs::read_dir(&env.kcap_home)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("store.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt store is kept aside once");
    assert!(env.store().health().is_ok(), "{:?}", env.store().health());
}

/// sled 0.34 writes a snapshot on every open, to `snap.<lsn>.generating` and then renamed; a
/// process killed in between left that file, sled then read it as the newest snapshot, called
/// the store corrupt and kcap rebuilt it empty: the killed finalizer's machine was gone and
/// `finalize --resume` had nothing to resume (1 kill -9 in about 90 under load).
#[test]
fn a_snapshot_left_unfinished_by_a_kill_is_not_corruption() {
    let env = Env::new();
    let sid = SessionId::new_random();
    let path = kcap::config::transcript_path(&env.copilot_home, sid);
    let timings = kcap::machine::Timings::default();
    env.store()
        .spawn_machine(sid, &path, timings, kcap::config::now_ms())
        .unwrap();
    // What the kill leaves: an empty snapshot named above the finished one.
    let store_dir = env.kcap_home.join("store");
    std::fs::write(store_dir.join("snap.FFFFFFFFFFFFFFF0.generating"), b"").unwrap();

    let record = env.store().latest_machine(sid).unwrap();
    assert_eq!(record.map(|r| r.meta.session), Some(sid), "the machine survives");
    let aside = std::fs::read_dir(&env.kcap_home)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("store.corrupt-"))
        .count();
    assert_eq!(aside, 0, "nothing was moved aside");
    assert!(!store_dir.join("snap.FFFFFFFFFFFFFFF0.generating").exists());
}
