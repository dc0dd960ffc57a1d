//! The declarations themselves: held to the README's table, their defaults to their kinds, and what an
//! unknown key and check-config say of them.

use super::{super::*, LOCAL, error_of, service_error};

/// The names the README's configuration table gives, each with its section: `[section] name` (a `*` ending a
/// name stands for every key it begins; `anonymous_result_location.*` and `anonymous_result_dst.*` name the
/// table's other names).
fn readme_keys() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme.split("## Configuration").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut keys = Vec::new();
    for row in table.lines().filter(|line| line.starts_with("| `")) {
        let cell = row.split('|').nth(1).unwrap();
        let mut section = String::new();
        for name in cell.split('`').skip(1).step_by(2) {
            let name = match name.strip_prefix('[').and_then(|rest| rest.split_once("] ")) {
                Some((named, rest)) => {
                    section = named.to_owned();
                    rest
                }
                None => name,
            };
            keys.push((section.clone(), name.to_owned()));
        }
    }
    keys
}

#[test]
fn the_readme_table_names_every_declared_key_and_no_other() {
    let readme = readme_keys();
    let declared = declared_keys();
    // The rows of the location table's other names stand for no key of their own.
    let aliases: Vec<String> = backend::LOCATION_TABLES[1..].iter().map(|name| format!("{name}.*")).collect();
    let readme: Vec<(String, String)> = readme.into_iter().filter(|(_, pattern)| !aliases.contains(pattern)).collect();
    let matches = |pattern: &str, name: &str| match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    };
    for (section, name, _) in &declared {
        let listed = readme.iter().any(|(s, pattern)| s == section && matches(pattern, name));
        assert!(listed, "`[{section}] {name}` is declared but not in the README's configuration table");
    }
    for (section, pattern) in &readme {
        let exists = declared.iter().any(|(s, name, _)| s == section && matches(pattern, name));
        assert!(exists, "the README's configuration table names `[{section}] {pattern}`, which is not declared");
    }
    assert!(readme.len() > 30, "the README's table was not read: {readme:?}");
}

#[test]
fn every_default_is_a_value_of_its_key() {
    for (section, name, key) in declared_keys() {
        let Some(value) = key.default_value() else { continue };
        let read = key::read(&key.kind, value).unwrap_or_else(|e| panic!("[{section}] {name}: its default {e}"));
        match (read, &key.default) {
            (key::Read::Duration(d), key::KeyDefault::Duration(default)) => assert_eq!(d, *default, "{name}"),
            (key::Read::Count(n), key::KeyDefault::Count(default)) => assert_eq!(n, *default, "{name}"),
            (key::Read::Bool(b), key::KeyDefault::Bool(default)) => assert_eq!(b, *default, "{name}"),
            (key::Read::Ratio(r), key::KeyDefault::Ratio(default)) => assert_eq!(r, *default, "{name}"),
            (_, key::KeyDefault::Text(_)) => {}
            (read, default) => panic!("[{section}] {name}: {default:?} reads as {read:?}"),
        }
    }
}

#[test]
fn a_misspelt_key_is_answered_with_the_closest_allowed_one() {
    let message = error_of(
        "[scheduler]\nanonymous_results.s3.url = \"s3://bucket/k\"\nanonymous_results.s3.aws_secret_acess_key = \"SECRET\"\n",
    );
    assert!(message.contains("did you mean `aws_secret_access_key`?"), "{message}");
    assert!(!message.contains("SECRET\""), "{message}");
    let message = service_error("storage_timout = \"5s\"");
    assert!(message.starts_with("anonymous_results_service.storage_timout:"), "{message}");
    assert!(message.contains("did you mean `storage_timeout`?"), "{message}");
    let message = service_error("tls.cert = \"/x\"");
    assert!(message.contains("did you mean `cert_file`?"), "{message}");
    let message = service_error("something_else_entirely = 1");
    assert!(!message.contains("did you mean"), "{message}");
}

#[test]
fn check_config_says_what_each_key_means_and_fills_in_the_defaults() {
    let shown = Config::from_toml(LOCAL).unwrap().to_string();
    assert!(
        shown.contains("# the longest one storage operation may take, retries included\nstorage_timeout = \"30s\""),
        "{shown}"
    );
    assert!(shown.contains("anonymous_results.commit_timeout = \"1day\""), "{shown}");
    assert!(Config::from_toml(&shown).unwrap().to_string() == shown, "printing is stable:\n{shown}");
}
