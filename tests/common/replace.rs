//! Replacing a transcript by rename in the simulations, reproducibly.

use std::path::Path;

/// Replaces the file at `path` with `contents` by rename (an atomic rewrite), first hard-linking
/// the outgoing file into `replaced/` beside it, so its inode number stays taken. Otherwise the
/// filesystem may hand that number to the next replacement, the new file then has the old
/// (device, inode) identity, and a simulated schedule depends on the allocator and on what
/// other tests did meanwhile: a seed would not replay.
#[track_caller]
pub fn replace_keeping_old_inode(path: &Path, contents: &str) {
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let kept = dir.join("replaced");
        std::fs::create_dir_all(&kept).unwrap();
        let link = kept.join(meta.ino().to_string());
        if !link.exists() {
            std::fs::hard_link(path, link).unwrap();
        }
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
