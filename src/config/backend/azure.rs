//! `anonymous_results.abs`: an Azure Blob Storage container, with the Azure keys of Polars' `storage_options`.

use std::{collections::BTreeMap, fmt};

use super::{
    super::{
        ConfigError,
        key::{Key, KeyDefault, Kind},
        table::Table,
    },
    location::{read_options, read_url, split_url, valid_name},
};
use crate::secret::Secret;

pub(in crate::config) const ABS_URL: Key = Key {
    name: "url",
    kind: Kind::Text,
    default: KeyDefault::None,
    meaning: "the container and key prefix of the results: az://container[/prefix], \
              abfss://container@account.dfs.core.windows.net[/prefix] (or abfs://)",
};

/// The storage account's name, when the URL does not carry it.
pub(in crate::config) const ACCOUNT_NAME: &str = "azure_storage_account_name";
/// Whether the store is the local emulator (Azurite), whose account is `devstoreaccount1`.
pub(in crate::config) const USE_EMULATOR: &str = "azure_storage_use_emulator";
/// The emulator's account.
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";

/// The Azure keys of Polars' `storage_options` that `anonymous_results.abs` accepts besides `url`. Those
/// holding credentials are never shown.
pub(in crate::config) const AZURE_OPTIONS: &[Key] = &[
    azure_option("azure_storage_account_name", Kind::Text, "the storage account, when the URL does not name it"),
    azure_option("azure_storage_account_key", Kind::Secret, "the account's shared key"),
    azure_option("azure_storage_access_key", Kind::Secret, "the same as azure_storage_account_key"),
    azure_option("azure_storage_master_key", Kind::Secret, "the same as azure_storage_account_key"),
    azure_option("azure_storage_sas_key", Kind::Secret, "a shared access signature (SAS) to authorize with"),
    azure_option("azure_storage_sas_token", Kind::Secret, "the same as azure_storage_sas_key"),
    azure_option("azure_storage_token", Kind::Secret, "a static OAuth bearer token"),
    azure_option("azure_storage_client_id", Kind::Text, "the Azure AD application (service principal)"),
    azure_option("azure_storage_client_secret", Kind::Secret, "the Azure AD application's secret"),
    azure_option("azure_storage_tenant_id", Kind::Text, "the Azure AD tenant"),
    azure_option("azure_storage_authority_host", Kind::Url, "the Azure AD authority host"),
    azure_option("azure_federated_token_file", Kind::Text, "a workload identity's token file"),
    azure_option("azure_msi_endpoint", Kind::Url, "the managed identity endpoint"),
    azure_option("azure_object_id", Kind::Text, "the managed identity's object id"),
    azure_option("azure_msi_resource_id", Kind::Text, "the managed identity's resource id"),
    azure_option("azure_use_azure_cli", Kind::Text, "authorize with the Azure CLI's login"),
    azure_option("azure_storage_use_emulator", Kind::Text, "the store is the Azurite emulator"),
    azure_option(
        "azure_endpoint",
        Kind::Url,
        "the Blob service's URL, when not https://<account>.blob.core.windows.net",
    ),
    azure_option("azure_storage_endpoint", Kind::Url, "the same as azure_endpoint"),
    azure_option("azure_use_fabric_endpoint", Kind::Text, "the store is Microsoft Fabric OneLake"),
    azure_option("azure_allow_http", Kind::Text, "allow an http:// endpoint"),
    azure_option("azure_skip_signature", Kind::Text, "send requests unsigned (a public container)"),
    azure_option("azure_disable_tagging", Kind::Text, "write no blob tags"),
    azure_option("azure_storage_encryption_key", Kind::Secret, "a customer-provided encryption key"),
];

const fn azure_option(name: &'static str, kind: Kind, meaning: &'static str) -> Key {
    Key { name, kind, default: KeyDefault::None, meaning }
}

/// `anonymous_results.abs`.
#[derive(Clone, Debug, PartialEq)]
pub struct AzureConfig {
    /// `url`: the container, as configured.
    pub url: AzureUrl,
    /// The storage account: from the URL, `azure_storage_account_name`, or the emulator's.
    pub account: String,
    /// The Azure storage options, keyed by their Polars names; every value is held as a [`Secret`].
    pub options: BTreeMap<String, Secret>,
}

/// A parsed `az://container[/prefix]`, `abfs[s]://container[@host][/prefix]` url.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureUrl {
    /// `az`, `abfs` or `abfss`, as configured: sinks are named with it.
    pub scheme: &'static str,
    pub container: String,
    /// The host after `container@` (`account.dfs.core.windows.net`), when the URL names one.
    pub host: Option<String>,
    /// The key prefix without leading or trailing `/`; empty for the container's root.
    pub prefix: String,
}

impl AzureUrl {
    /// Parses the URL; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = split_url(
            text,
            &["az", "abfss", "abfs"],
            "an Azure Blob Storage",
            "az://container/path or abfss://container@account.dfs.core.windows.net/path",
        )?;
        let (container, host) = match url.authority.split_once('@') {
            Some((container, host)) => (container, Some(host)),
            None => (url.authority, None),
        };
        if !valid_name(container, 3..=63, b"-") || container.contains("--") {
            return Err("does not name a container: a container name is 3 to 63 lowercase letters, digits and \
                        single hyphens, from a letter or digit to a letter or digit"
                .to_owned());
        }
        if let Some(host) = host {
            let account = host.split('.').next().unwrap_or_default();
            if !valid_account(account) || !host.contains('.') {
                return Err("names no storage account after `@`: it must look like \
                            container@account.dfs.core.windows.net, the account 3 to 24 lowercase letters and digits"
                    .to_owned());
            }
        }
        let scheme = match url.scheme {
            "az" => "az",
            "abfs" => "abfs",
            _ => "abfss",
        };
        Ok(Self { scheme, container: container.to_owned(), host: host.map(str::to_owned), prefix: url.prefix })
    }

    /// The account the URL's host names (its first label), if it names one.
    pub fn account(&self) -> Option<&str> {
        self.host.as_deref().and_then(|host| host.split('.').next())
    }

    /// The container's root as sink URIs begin: `abfss://container@host` or `az://container`.
    pub fn root(&self) -> String {
        match &self.host {
            Some(host) => format!("{}://{}@{host}", self.scheme, self.container),
            None => format!("{}://{}", self.scheme, self.container),
        }
    }
}

impl fmt::Display for AzureUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.root())?;
        match self.prefix.is_empty() {
            true => Ok(()),
            false => write!(f, "/{}", self.prefix),
        }
    }
}

fn valid_account(name: &str) -> bool {
    (3..=24).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

pub(super) fn parse(mut table: Table) -> Result<(AzureConfig, toml::Table), ConfigError> {
    let url = read_url(&mut table, &ABS_URL, AzureUrl::parse)?;
    let path = table.path().to_owned();
    let (options, shown) = read_options(table, &ABS_URL, AZURE_OPTIONS)?;
    let named = options.get(ACCOUNT_NAME).map(|name| name.expose().to_owned());
    let emulator = options.get(USE_EMULATOR).is_some_and(|value| value.expose() == "true");
    let account_key = format!("{path}.{ACCOUNT_NAME}");
    let account = match (url.account(), named) {
        (Some(in_url), Some(named)) if in_url != named => {
            return Err(ConfigError::invalid(
                &account_key,
                format!("names another account than `{path}.url` does: keep one"),
            ));
        }
        (Some(in_url), _) => in_url.to_owned(),
        (None, Some(named)) => named,
        (None, None) if emulator => EMULATOR_ACCOUNT.to_owned(),
        (None, None) => {
            return Err(ConfigError::invalid(
                &account_key,
                format!(
                    "is required when `{path}.url` names no account: set it, or use \
                     abfss://container@account.dfs.core.windows.net/path"
                ),
            ));
        }
    };
    if !valid_account(&account) {
        return Err(ConfigError::invalid(&account_key, "must be 3 to 24 lowercase letters and digits"));
    }
    Ok((AzureConfig { url, account, options }, shown))
}
