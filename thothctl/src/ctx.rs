//! What every thothctl command works with: the global options, the admin connection they
//! open, and the error that carries its exit status.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use thoth_client::{self as client, Credentials};
use thoth_proto::fleet::admin_client::AdminClient;
use tonic::transport::Channel;

#[derive(Args)]
pub(crate) struct Global {
    /// Controller URL [default: CREDENTIALS/controller.url (written by `thoth-controller serve`), else https://127.0.0.1:7443]
    #[arg(long, env = "THOTH_CONTROLLER", global = true, value_name = "URL")]
    pub(crate) controller: Option<String>,
    /// Admin credential directory (ca.crt, client.crt, client.key) [default: $THOTHCTL_CREDENTIALS, else the local controller's admin/]
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) credentials: Option<PathBuf>,
    /// Tenant to act on [default: your certificate's tenant, or the controller's default tenant]
    #[arg(long, env = "THOTH_TENANT", global = true)]
    pub(crate) tenant: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// An error with its exit status.
pub(crate) struct Fail {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Fail {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for Fail {
    fn from(s: tonic::Status) -> Fail {
        use tonic::Code;
        let (code, what) = match s.code() {
            Code::Unauthenticated => (4, "not authenticated"),
            Code::PermissionDenied => (4, "permission denied"),
            Code::InvalidArgument => (5, "invalid request"),
            Code::NotFound => (1, "not found"),
            Code::Unavailable => (3, "controller unavailable"),
            Code::DeadlineExceeded => (3, "the controller did not answer in time"),
            Code::ResourceExhausted => (5, "too large"),
            _ => (1, "error"),
        };
        let mut msg = format!("{what}: {}", s.message());
        if s.code() == Code::Unavailable {
            msg.push_str("\n  hint: is the controller running? (thoth-controller serve)");
        }
        Fail::new(code, msg)
    }
}

pub(crate) type Result<T> = std::result::Result<T, Fail>;

pub(crate) struct Ctx {
    pub(crate) global: Global,
}

impl Ctx {
    pub(crate) fn tenant(&self) -> String {
        self.global.tenant.clone().unwrap_or_default()
    }

    pub(crate) async fn admin(&self) -> Result<AdminClient<Channel>> {
        let dir = self
            .global
            .credentials
            .clone()
            .unwrap_or_else(client::default_credentials_dir);
        let creds = Credentials::from_dir(&dir).map_err(|e| {
            Fail::new(
                4,
                format!(
                    "no admin credential: {e}\n  hint: pass --credentials DIR (a directory with ca.crt, client.crt, client.key), or run thothctl where `thoth-controller serve` ran"
                ),
            )
        })?;
        let url = match &self.global.controller {
            Some(u) => u.clone(),
            None => std::fs::read_to_string(dir.join("controller.url"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "https://127.0.0.1:7443".into()),
        };
        let channel = client::connect(&url, &creds, Some(Duration::from_secs(30)))
            .await
            .map_err(|e| Fail::new(3, e.to_string()))?;
        Ok(AdminClient::new(channel).max_decoding_message_size(64 << 20))
    }

    pub(crate) fn print_json(&self, v: serde_json::Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("JSON values serialize")
        );
    }
}
