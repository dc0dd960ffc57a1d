//! The local backend's permission keys of `[anonymous_results_service]`: which group the sinks belong to
//! and their mode, so that workers in that group write them and nobody else does.

use super::{
    ConfigError,
    key::{Key, KeyDefault, Kind},
    service::SERVICE_SECTION,
    table::Table,
};

/// The mode sinks are made with unless configured: setgid (what is made inside keeps the sink's group),
/// the owner and the group read and write, others nothing.
pub const DEFAULT_SINK_MODE: u32 = 0o2770;

pub(super) const SINK_GROUP: Key = Key {
    name: "local.sink_group",
    kind: Kind::Text,
    default: KeyDefault::None,
    meaning: "the group (a name in /etc/group, or a number) the local backend's sinks belong to, so that workers in it write them (default: the service's own group)",
};
pub(super) const SINK_MODE: Key = Key {
    name: "local.sink_mode",
    kind: Kind::Text,
    default: KeyDefault::Text("2770"),
    meaning: "the mode of the local backend's sinks, in octal: setgid, the owner and the group read and write, others nothing",
};

pub(super) const CLIENT_GROUP: Key = Key {
    name: "local.client_group",
    kind: Kind::Text,
    default: KeyDefault::None,
    meaning: "the group (a name in /etc/group, or a number) a committed sink is given to, the service's user owning it: clients in it read results, workers no longer change them (needs CAP_CHOWN)",
};

pub(super) const KEYS: &[&Key] = &[&SINK_GROUP, &SINK_MODE, &CLIENT_GROUP];

/// How the local backend makes sinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    /// `local.sink_group`: the group id the sinks are given; `None`: the service's own group.
    pub group: Option<u32>,
    /// `local.sink_mode` (default `2770`): the mode each sink is given, the umask aside.
    pub mode: u32,
    /// `local.client_group`: at Commit, the sink and its files are given to the service's user and this group
    /// (folders `2750`, files `0640`); `None`: the worker keeps its files.
    pub client_group: Option<u32>,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self { group: None, mode: DEFAULT_SINK_MODE, client_group: None }
    }
}

pub(super) fn parse(table: &mut Table) -> Result<SinkConfig, ConfigError> {
    let invalid =
        |key: &Key, message: String| ConfigError::invalid(&format!("{SERVICE_SECTION}.{}", key.name), message);
    let group = match table.text(&SINK_GROUP)? {
        Some(group) => Some(group_id(&group, GROUP_FILE).map_err(|message| invalid(&SINK_GROUP, message))?),
        None => None,
    };
    let mode = match table.text(&SINK_MODE)? {
        Some(mode) => sink_mode(&mode).map_err(|message| invalid(&SINK_MODE, message))?,
        None => DEFAULT_SINK_MODE,
    };
    let client_group = match table.text(&CLIENT_GROUP)? {
        Some(group) => Some(group_id(&group, GROUP_FILE).map_err(|message| invalid(&CLIENT_GROUP, message))?),
        None => None,
    };
    Ok(SinkConfig { group, mode, client_group })
}

/// Where group names are looked up.
const GROUP_FILE: &str = "/etc/group";

/// The id of the group `group`: a number as it is, or a name looked up in `file` (`name:x:gid:members`).
fn group_id(group: &str, file: &str) -> Result<u32, String> {
    if let Ok(id) = group.parse::<u32>() {
        return Ok(id);
    }
    let groups = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file} to find `{group}`: {e}"))?;
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            Some((fields.next()?, fields.nth(1)?.parse::<u32>().ok()?))
        })
        .find_map(|(name, id)| (name == group).then_some(id))
        .ok_or_else(|| format!("no group `{}` in {file}: give its number instead", group.escape_debug()))
}

/// A mode written in octal (`"2770"`), at most `7777`, in which the owner may read, write and enter (the
/// service makes and removes what is in a sink).
fn sink_mode(text: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("`{}` is not a mode in octal, such as \"2770\"", text.escape_debug()))?;
    match mode & 0o700 == 0o700 {
        true => Ok(mode),
        false => Err(format!("{mode:o} does not let the service (the owner) read, write and enter its sinks")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_numbers_or_names_of_the_group_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("group");
        std::fs::write(&file, "root:x:0:\nworkers:x:54400:alice,bob\nbroken line\n").unwrap();
        let file = file.to_str().unwrap();
        assert_eq!(group_id("54400", file), Ok(54400));
        assert_eq!(group_id("workers", file), Ok(54400));
        assert_eq!(group_id("root", file), Ok(0));
        let missing = group_id("clients\n", file).unwrap_err();
        assert!(missing.contains("no group `clients\\n`") && missing.contains("number"), "{missing}");
        assert!(group_id("workers", "/no/such/file").unwrap_err().contains("cannot read /no/such/file"));
    }

    #[test]
    fn modes_are_octal_and_leave_the_owner_its_sinks() {
        assert_eq!(sink_mode("2770"), Ok(0o2770));
        assert_eq!(sink_mode("755"), Ok(0o755));
        for bad in ["rwx", "8000", "77777", "-1", ""] {
            assert!(sink_mode(bad).unwrap_err().contains("not a mode in octal"), "{bad}");
        }
        assert!(sink_mode("0570").unwrap_err().contains("does not let the service"));
    }
}
