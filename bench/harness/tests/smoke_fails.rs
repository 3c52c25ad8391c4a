//! A benchmark's smoke run fails (exits non-zero) when Skiff refuses every write: the harness is
//! pointed at `refusing-member`, a stand-in that says it leads and refuses every write.

use std::process::Command;

#[test]
fn the_store_smoke_run_fails_against_a_member_that_refuses_every_write() {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff-bench"))
        .args(["--smoke", "--skiff", env!("CARGO_BIN_EXE_refusing-member"), "--etcd", "/nonexistent/etcd", "store"])
        .output()
        .expect("run skiff-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run must fail; it exited {:?}\n{stderr}", out.status);
    assert!(stderr.contains("skiff: no writes at 1 clients succeeded"), "{stderr}");
}
