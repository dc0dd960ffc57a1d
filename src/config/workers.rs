//! The keys of `[anonymous_results_service]` that say which storage credentials workers are handed:
//! `worker_credentials` (`"shared"`: the configured ones; `"scoped"`: credentials of an assumed role that
//! reach one sink alone), with the role, how long its sessions may last, and where STS is.

use std::time::Duration;

use super::{
    ConfigError,
    key::{Key, KeyDefault, Kind},
    service::SERVICE_SECTION,
    table::Table,
};

/// The shortest session STS grants (AssumeRole's `DurationSeconds` minimum).
pub const MIN_SESSION: Duration = Duration::from_secs(900);
/// The longest session STS grants (a role's `MaxSessionDuration` maximum).
pub const MAX_SESSION: Duration = Duration::from_secs(12 * 3600);

pub(super) const WORKER_CREDENTIALS: Key = Key {
    name: "worker_credentials",
    kind: Kind::Choice(&["shared", "scoped"]),
    default: KeyDefault::Text("shared"),
    meaning: "the storage credentials workers get: shared (the configured ones, or worker_storage_options) or scoped (S3: a session of worker_role_arn that reaches only the result's sink)",
};
pub(super) const WORKER_ROLE_ARN: Key = Key {
    name: "worker_role_arn",
    kind: Kind::Text,
    default: KeyDefault::None,
    meaning: "the role the service assumes for each sink with worker_credentials = \"scoped\" (arn:aws:iam::ACCOUNT:role/NAME)",
};
pub(super) const WORKER_SESSION_MAX: Key = Key {
    name: "worker_session_max",
    kind: Kind::Duration {
        min: MIN_SESSION,
        max: MAX_SESSION,
        out_of_range: Some("must be from 15m to 12h, as STS allows"),
    },
    default: KeyDefault::Duration(Duration::from_secs(3600)),
    meaning: "the longest session scoped credentials are asked for (at most the role's maximum session duration); a session lasts until the commit deadline if that is sooner, and at least 15m",
};
pub(super) const WORKER_STS_ENDPOINT: Key = Key {
    name: "worker_sts_endpoint",
    kind: Kind::Url,
    default: KeyDefault::None,
    meaning: "where scoped credentials are asked for (default: aws_endpoint_url if set, as MinIO and Ceph RGW serve STS there; else https://sts.REGION.amazonaws.com)",
};

pub(super) const KEYS: &[&Key] = &[&WORKER_CREDENTIALS, &WORKER_ROLE_ARN, &WORKER_SESSION_MAX, &WORKER_STS_ENDPOINT];

/// Which storage credentials workers are handed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WorkerCredentials {
    /// The configured ones (`worker_storage_options`, or the service's own).
    #[default]
    Shared,
    /// For each sink, a session of a role that reaches that sink alone.
    Scoped(ScopedCredentials),
}

/// How scoped credentials are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopedCredentials {
    /// `worker_role_arn`: the role assumed for each sink.
    pub role_arn: String,
    /// `worker_session_max` (default 1h, from 15m to 12h): the longest session asked for.
    pub session_max: Duration,
    /// `worker_sts_endpoint`: STS's URL, when configured.
    pub sts_endpoint: Option<String>,
}

pub(super) fn parse(table: &mut Table) -> Result<WorkerCredentials, ConfigError> {
    let invalid = |key: &Key, message: &str| ConfigError::invalid(&format!("{SERVICE_SECTION}.{}", key.name), message);
    let scoped = table.text(&WORKER_CREDENTIALS)?.as_deref() == Some("scoped");
    let role_arn = table.text(&WORKER_ROLE_ARN)?;
    let session_max = table.duration(&WORKER_SESSION_MAX)?.unwrap_or(WORKER_SESSION_MAX.default_duration());
    let sts_endpoint = table.text(&WORKER_STS_ENDPOINT)?;
    if !scoped {
        let stray = [(role_arn.is_some(), &WORKER_ROLE_ARN), (sts_endpoint.is_some(), &WORKER_STS_ENDPOINT)];
        if let Some((_, key)) = stray.into_iter().find(|(set, _)| *set) {
            return Err(invalid(key, "applies to worker_credentials = \"scoped\" only: set that too, or remove this"));
        }
        return Ok(WorkerCredentials::Shared);
    }
    let role_arn = role_arn.ok_or_else(|| {
        invalid(
            &WORKER_ROLE_ARN,
            "is required with worker_credentials = \"scoped\": the role the service assumes for each sink",
        )
    })?;
    check_role_arn(&role_arn).map_err(|message| invalid(&WORKER_ROLE_ARN, &message))?;
    Ok(WorkerCredentials::Scoped(ScopedCredentials { role_arn, session_max, sts_endpoint }))
}

/// A role's ARN as STS takes it: `arn:PARTITION:iam::ACCOUNT:role/NAME`, at most 2,048 printable ASCII
/// characters.
fn check_role_arn(arn: &str) -> Result<(), String> {
    let shown = arn.escape_debug();
    if arn.len() > 2048 || !arn.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(format!("`{shown}` is not a role's ARN: at most 2,048 printable characters, no space"));
    }
    let mut parts = arn.splitn(6, ':');
    let well_formed = parts.next() == Some("arn")
        && parts.next().is_some_and(|partition| !partition.is_empty())
        && parts.next() == Some("iam")
        && parts.next() == Some("")
        && parts.next().is_some_and(|account| !account.is_empty())
        && parts.next().is_some_and(|resource| resource.starts_with("role/") && resource.len() > "role/".len());
    match well_formed {
        true => Ok(()),
        false => {
            Err(format!("`{shown}` is not a role's ARN, such as \"arn:aws:iam::111122223333:role/query-workers\""))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_are_checked() {
        assert_eq!(check_role_arn("arn:aws:iam::111122223333:role/query-workers"), Ok(()));
        assert_eq!(check_role_arn("arn:aws-cn:iam::111122223333:role/path/to/workers"), Ok(()));
        for bad in [
            "",
            "query-workers",
            "arn:aws:iam::111122223333:user/worker",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::111122223333:role/",
            "arn:aws:iam::111122223333:role/a b",
            "arn:aws:iam::111122223333:role/a\nb",
        ] {
            let refused = check_role_arn(bad).expect_err(bad);
            assert!(refused.contains("ARN") && !refused.contains('\n'), "{refused}");
        }
        assert!(check_role_arn(&format!("arn:aws:iam::1:role/{}", "a".repeat(2048))).is_err());
    }
}
