//! The `devicehub` binary, run as a user would.

use std::process::{Command, Output};

use crate::support::{self, Simulator, INCOMPATIBLE, ZEBRA};

fn devicehub(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_devicehub"))
        .args(args)
        // A user's own config must not leak into the tests.
        .env("DEVICEHUB_CONFIG", "/nonexistent/devicehub.toml")
        .output()
        .expect("run devicehub")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn plugins_lists_loaded_plugins_with_usb_ids_and_refused_files() {
    let dir = support::plugins_folder(&[ZEBRA, INCOMPATIBLE]);
    let dir_arg = dir.path().to_str().unwrap();
    let config = dir.path().join("devicehub.toml");
    std::fs::write(&config, support::trust_toml()).unwrap();
    let config_arg = config.to_str().unwrap();

    let out = devicehub(&[
        "--config",
        config_arg,
        "--plugins-dir",
        dir_arg,
        "plugins",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let zebra = &listing["plugins"][0];
    assert_eq!(zebra["name"], "zebra");
    let ids: Vec<&str> = zebra["usb_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["usb_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"0A5F:0141") && ids.contains(&"0A5F:0009"),
        "{ids:?}"
    );
    assert!(listing["refused"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("incompatible plugin API"));

    let out = devicehub(&["--config", config_arg, "--plugins-dir", dir_arg, "plugins"]);
    let text = stdout(&out);
    assert!(
        text.contains("zebra 0.1.0") && text.contains("Refused:"),
        "{text}"
    );
}

#[test]
fn print_with_model_writes_the_printer_bytes_to_a_file() {
    let dir = support::plugins_folder(&[ZEBRA]);
    let dir_arg = dir.path().to_str().unwrap();
    let gif = support::fixture("indicia.gif");
    let zpl = dir.path().join("label.zpl");
    let out = devicehub(&[
        "--config",
        "/nonexistent.toml",
        "--plugins-dir",
        dir_arg,
        "print",
        gif.to_str().unwrap(),
        "--model",
        "0A5F:0141",
        "--out",
        zpl.to_str().unwrap(),
        "--copies",
        "2",
    ]);
    // An explicit config that does not exist is an error that names it.
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent.toml"),
        "{}",
        stderr(&out)
    );

    let config = dir.path().join("devicehub.toml");
    std::fs::write(&config, support::trust_toml()).unwrap();
    let out = devicehub(&[
        "--config",
        config.to_str().unwrap(),
        "--plugins-dir",
        dir_arg,
        "print",
        gif.to_str().unwrap(),
        "--model",
        "0A5F:0141",
        "--out",
        zpl.to_str().unwrap(),
        "--copies",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&zpl).unwrap();
    assert!(
        bytes.starts_with(b"^XA") && bytes.ends_with(b"^XZ"),
        "{:?}",
        &bytes[..20]
    );
    assert!(bytes.windows(6).any(|w| w == b"^PQ2,0"), "copies in ^PQ");

    let epl = dir.path().join("label.epl");
    let out = devicehub(&[
        "--config",
        config.to_str().unwrap(),
        "--plugins-dir",
        dir_arg,
        "print",
        gif.to_str().unwrap(),
        "--model",
        "0A5F:0009",
        "--out",
        epl.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&epl).unwrap();
    assert!(bytes.starts_with(b"\r\nN\r\n"), "LP2844 gets EPL2");
}

#[test]
fn print_to_a_configured_device_reaches_the_printer() {
    let sim = Simulator::zebra(&["--language", "zpl"]);
    let dir = support::plugins_folder(&[ZEBRA]);
    let config = dir.path().join("devicehub.toml");
    std::fs::write(
        &config,
        format!(
            "[[devices]]\nid = \"desk-zebra\"\naddress = \"tcp://{}\"\nusb_id = \"0A5F:0141\"\n{}",
            sim.print_addr,
            support::trust_toml()
        ),
    )
    .unwrap();
    let base = [
        "--config",
        config.to_str().unwrap(),
        "--plugins-dir",
        dir.path().to_str().unwrap(),
    ];

    let out = devicehub(&[&base[..], &["devices"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("desk-zebra"), "{}", stdout(&out));

    let pdf = support::fixture("label-4x6.pdf");
    let out = devicehub(
        &[
            &base[..],
            &["print", pdf.to_str().unwrap(), "--device", "desk-zebra"],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Printed 1 label(s) on desk-zebra"),
        "{}",
        stdout(&out)
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let labels = runtime.block_on(sim.labels());
    assert_eq!(labels.len(), 1);
    assert_eq!(
        (labels[0]["width"].as_u64(), labels[0]["height"].as_u64()),
        (Some(812), Some(1218))
    );

    let out = devicehub(
        &[
            &base[..],
            &["print", pdf.to_str().unwrap(), "--device", "nope"],
        ]
        .concat(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no device 'nope'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_misspelled_config_key_is_reported_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("devicehub.toml");
    std::fs::write(&config, "log_levle = \"debug\"\n").unwrap();
    let out = devicehub(&["--config", config.to_str().unwrap(), "plugins"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("log_levle") && err.contains("devicehub.toml"),
        "{err}"
    );
}
