//! The `grpc` example, run as a user runs it (`cargo run -p tower-idempotency-grpc --example grpc`): its client's
//! first answer is lost, its retries with the same key get the answer, and the order is
//! created once.

use std::process::Command;

#[test]
fn the_example_tells_the_retry_story_and_creates_one_order() {
    // Built in the profile this test was built in, whose directory holds this binary.
    let deps = std::env::current_exe().unwrap();
    let profile_dir = deps.parent().unwrap().parent().unwrap();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev",
        other => other,
    };
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--example",
            "grpc",
            "--profile",
            profile,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the grpc example failed");
    let binary = profile_dir.join("examples").join("grpc");
    let output = Command::new(binary).output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("(lost)"), "{stdout}");
    assert!(stdout.contains("OK (replayed)"), "{stdout}");
    assert!(
        stdout.contains("the same key, another order: FailedPrecondition"),
        "{stdout}"
    );
    assert!(
        stdout.contains("CreateOrder ran 1 time(s); 1 order(s) exist"),
        "{stdout}"
    );
}
