//! The `ringlog-bench` binary as a user meets it: exit statuses, one-line errors, and a small
//! disk reference run end to end.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringlog-bench"))
        .args(args)
        .output()
        .expect("run ringlog-bench")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn impossible_options_are_one_line_and_exit_2() {
    let cases: [&[&str]; 6] = [
        &["produce", "--cold"],
        &["produce", "--partitions", "0"],
        &["consume", "--total-bytes", "1000TiB"],
        &["produce", "--server", "127.0.0.1:1"],
        &[
            "consume",
            "--consumers",
            "3",
            "--partitions",
            "2",
            "--references",
            "none",
        ],
        &["e2e", "--total-bytes", "1GiB"],
    ];
    for args in cases {
        let output = bench(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = stderr_of(&output);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("ringlog-bench: "), "{args:?}: {stderr}");
    }
}

#[test]
fn disk_reference_runs_and_summary_reads_it() {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("disk.json");
    let svg = out.path().join("disk.svg");
    let output = bench(&[
        "disk",
        "--disk-bytes",
        "8MiB",
        "--dir",
        out.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr_of(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("sequential write"), "{stdout}");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(value["scenario"], "disk");
    assert!(value["reference"]["disk_write_mb_per_s"].as_f64().unwrap() > 0.0);
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().starts_with(".ringlog-bench-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary data left behind: {leftovers:?}"
    );

    let summary = bench(&["summary", out.path().to_str().unwrap()]);
    assert!(summary.status.success(), "{}", stderr_of(&summary));
    let table = String::from_utf8_lossy(&summary.stdout);
    assert!(
        table.contains("MB = 10^6 bytes") && table.contains("disk"),
        "{table}"
    );
}

#[test]
fn summary_of_an_empty_directory_fails() {
    let out = tempfile::tempdir().unwrap();
    let output = bench(&["summary", out.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr_of(&output).contains("no ringlog-bench reports"));
}

#[test]
fn small_runs_of_every_scenario_report_json() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let runs: [&[&str]; 8] = [
        &[
            "append",
            "--duration-s",
            "0.3",
            "--batch-bytes",
            "16KiB",
            "--producers",
            "2",
        ],
        &["produce", "--duration-s", "0.3", "--acks", "leader"],
        &[
            "produce",
            "--duration-s",
            "0.3",
            "--produce-with",
            "producer",
            "--record-size",
            "100",
        ],
        &["consume", "--total-bytes", "4MiB", "--cold"],
        &["e2e", "--duration-s", "0.3", "--rate-mb-per-s", "5"],
        &[
            "e2e",
            "--duration-s",
            "0.3",
            "--rate-mb-per-s",
            "5",
            "--produce-with",
            "requests",
        ],
        &["fanout", "--duration-s", "0.3", "--groups", "3"],
        &[
            "share",
            "--duration-s",
            "0.5",
            "--consumers",
            "2",
            "--work-us",
            "100",
        ],
    ];
    for (index, args) in runs.iter().enumerate() {
        let json = out.path().join(format!("{index}.json"));
        let mut all: Vec<&str> = args.to_vec();
        let json_arg = json.to_str().unwrap().to_string();
        all.extend_from_slice(&["--references", "none", "--dir", dir, "--json", &json_arg]);
        let output = bench(&all);
        assert!(output.status.success(), "{args:?}: {}", stderr_of(&output));
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(value["scenario"], args[0], "{args:?}");
        assert!(value["bytes"].as_u64().unwrap() > 0, "{args:?}: {value}");
        assert!(value["records"].as_u64().unwrap() > 0, "{args:?}: {value}");
        assert!(
            value["latency_us"]["count"].as_u64().unwrap() > 0,
            "{args:?}: {value}"
        );
    }
}

#[test]
fn kafka_without_kcat_is_unavailable_with_exit_2() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ringlog-bench"))
        .args(["kafka", "--total-bytes", "1MiB", "--references", "none"])
        .env("PATH", empty.path())
        .current_dir(empty.path())
        .output()
        .expect("run ringlog-bench");
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    // scripts/bench.sh skips a run whose stderr says this.
    assert!(stderr.contains("not available in this build"), "{stderr}");
    assert!(stderr.contains("apt-get install kcat"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// With kcat installed, a small run through both front doors; without it, the run must say how
/// to get it, and the test says on stderr (uncaptured) that the comparison was not checked.
/// CI's `cargo test` runs before scripts/kafka-compat.sh installs kcat, so .ci/run runs this
/// test again afterwards with `BENCH_REQUIRE_KCAT=1`, which makes a missing kcat a
/// failure. (Not RINGLOG_*: the bench's embedded server takes those as its settings.)
#[test]
fn kafka_compares_both_front_doors_or_says_kcat_is_missing() {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("kafka.json");
    let output = bench(&[
        "kafka",
        "--record-size",
        "100",
        "--partitions",
        "3",
        "--producers",
        "2",
        "--total-bytes",
        "2MiB",
        "--references",
        "none",
        "--dir",
        out.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = stderr_of(&output);
    if output.status.code() == Some(2) && stderr.contains("not available in this build") {
        assert!(stderr.contains("apt-get install kcat"), "{stderr}");
        assert!(
            std::env::var_os("BENCH_REQUIRE_KCAT").is_none(),
            "BENCH_REQUIRE_KCAT is set but the bench found no kcat: {stderr}"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED (in part) kafka_compares_both_front_doors_or_says_kcat_is_missing: kcat is \
             not installed, only the unavailable path was checked"
        );
        return;
    }
    assert!(output.status.success(), "{stderr}");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(value["scenario"], "kafka");
    let records = value["records"].as_u64().unwrap();
    assert!(records > 0, "{value}");
    let front_doors = value["front_doors"].as_array().unwrap();
    assert_eq!(front_doors.len(), 2, "{value}");
    for (comparison, direction) in front_doors.iter().zip(["produce", "consume"]) {
        assert_eq!(comparison["direction"], direction);
        for side in ["native", "kafka"] {
            assert_eq!(comparison[side]["records"], records, "{comparison}");
            assert_eq!(comparison[side]["bytes"], records * 100, "{comparison}");
            assert!(comparison[side]["records_per_s"].as_f64().unwrap() > 0.0);
        }
        assert!(comparison["ratio"].as_f64().unwrap() > 0.0, "{comparison}");
    }
    assert_eq!(value["ratio"], front_doors[0]["ratio"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("ratio") && stdout.contains("consume  native"),
        "{stdout}"
    );
}
