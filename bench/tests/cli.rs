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
    let runs: [&[&str]; 7] = [
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
