//! `maestro token …`, `maestro devices …` and `maestro pair`: the credentials that let
//! anything that is not this machine (a phone, a CI job, an agent elsewhere) use the server.
//! They call `/api/auth/*`, which only an `admin` credential or this machine may use.

use clap::{Args, Subcommand, ValueEnum};
use maestro_protocol::{CreatePairing, CreateToken, PairingCreated, Scope};
use serde_json::json;

use super::context::Context;
use super::output::{CmdResult, emit, fmt_time, kv, now_ms, table};

/// A credential's scope; each of read, respond, operate and admin includes the ones before it.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// Only run agents for the server (`maestro runner` on another machine): register, claim
    /// spawns, host their terminals; not even reads.
    Runner,
    /// Read everything and watch live events.
    Read,
    /// Also answer agents that need input, and send mail.
    Respond,
    /// Also change tasks and sessions, spawn and stop agents.
    Operate,
    /// Also manage tokens, devices and projects, and delete anything.
    Admin,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Self {
        match s {
            ScopeArg::Runner => Scope::Runner,
            ScopeArg::Read => Scope::Read,
            ScopeArg::Respond => Scope::Respond,
            ScopeArg::Operate => Scope::Operate,
            ScopeArg::Admin => Scope::Admin,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token and print it (the only time it is shown).
    Create {
        /// What the token may do.
        #[arg(long, value_enum)]
        scope: ScopeArg,
        /// What the token is for, shown in `maestro token list` (e.g. "ci", "build box").
        #[arg(long)]
        name: String,
        /// Days until the token stops working (default: until revoked).
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
    },
    /// List API tokens (never their secrets): scope, created, last used and from where.
    List,
    /// Revoke a token: its very next request fails, on every server sharing the store.
    Revoke {
        /// The token's id (`tok_…`, from `maestro token list`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List paired devices: name, scope, paired, last seen and from where.
    List,
    /// Revoke a device: its requests fail and its open connections close at once.
    Revoke {
        /// The device's id (`dev_…`, from `maestro devices list`).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct PairArgs {
    /// What the paired device may do.
    #[arg(long, value_enum, default_value = "respond")]
    pub scope: ScopeArg,
    /// The device's name (the phone may also name itself when it pairs).
    #[arg(long)]
    pub name: Option<String>,
}

pub async fn token(ctx: &Context, cmd: TokenCommand) -> CmdResult {
    let client = ctx.client()?;
    let e = |err: maestro_client::Error| ctx.err(err);
    match cmd {
        TokenCommand::Create {
            scope,
            name,
            expires_in_days,
        } => {
            let created = client
                .create_token(&CreateToken {
                    scope: Some(scope.into()),
                    name: Some(name),
                    expires_in_days,
                })
                .await
                .map_err(e)?;
            emit(ctx.json, &created, || {
                say!("Created token {} ({}).", created.id, created.scope);
                say!();
                say!("  {}", created.token);
                say!();
                say!("This is the only time the token is shown. Send it as");
                say!("`Authorization: Bearer <token>`, or set MAESTRO_TOKEN for the maestro CLI.");
                if let Some(at) = created.expires_at {
                    kv("Expires", fmt_time(at));
                }
            });
        }
        TokenCommand::List => {
            let tokens = client.list_tokens().await.map_err(e)?;
            emit(ctx.json, &tokens, || {
                if tokens.is_empty() {
                    say!("No tokens.");
                    return;
                }
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            t.scope.to_string(),
                            fmt_time(t.created_at),
                            t.expires_at.map(fmt_time).unwrap_or_else(|| "never".into()),
                            last_use(t.last_used_at, t.last_address.as_deref()),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "Name", "Scope", "Created", "Expires", "Last used"],
                    &rows,
                );
            });
        }
        TokenCommand::Revoke { id } => {
            client.revoke_token(&id).await.map_err(e)?;
            emit(ctx.json, &json!({ "id": id, "revoked": true }), || {
                say!("Revoked token {id}.");
            });
        }
    }
    Ok(())
}

pub async fn devices(ctx: &Context, cmd: DevicesCommand) -> CmdResult {
    let client = ctx.client()?;
    let e = |err: maestro_client::Error| ctx.err(err);
    match cmd {
        DevicesCommand::List => {
            let devices = client.list_devices().await.map_err(e)?;
            emit(ctx.json, &devices, || {
                if devices.is_empty() {
                    say!("No paired devices. Pair a phone with `maestro pair`.");
                    return;
                }
                let rows: Vec<_> = devices
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.clone(),
                            d.name.clone(),
                            d.scope.to_string(),
                            fmt_time(d.paired_at),
                            last_use(d.last_seen_at, d.last_address.as_deref()),
                        ]
                    })
                    .collect();
                table(&["ID", "Name", "Scope", "Paired", "Last seen"], &rows);
            });
        }
        DevicesCommand::Revoke { id } => {
            client.revoke_device(&id).await.map_err(e)?;
            emit(ctx.json, &json!({ "id": id, "revoked": true }), || {
                say!("Revoked device {id}; its open connections were closed.");
            });
        }
    }
    Ok(())
}

pub async fn pair(ctx: &Context, args: PairArgs) -> CmdResult {
    let client = ctx.client()?;
    let pairing = client
        .create_pairing(&CreatePairing {
            scope: Some(args.scope.into()),
            name: args.name,
        })
        .await
        .map_err(|e| ctx.err(e))?;
    emit(ctx.json, &pairing, || print_pairing(&pairing));
    Ok(())
}

/// The pairing as a person reads it: the URL, its QR code, the short code and how long they
/// work.
pub fn print_pairing(pairing: &PairingCreated) {
    say!("Open this on your phone (or scan the QR code) to pair it:");
    say!();
    say!("  {}", pairing.url);
    say!();
    say!("{}", super::qr::render_qr(&pairing.url));
    say!(
        "Or open the server's page and type the code {}.",
        pairing.short_code
    );
    let secs = ((pairing.expires_at - now_ms()) / 1000).max(0);
    say!(
        "Works once, for the next {secs} s, with scope '{}'. Five wrong codes cancel it.",
        pairing.scope
    );
    if pairing.url.starts_with("http://localhost") || pairing.url.starts_with("http://127.") {
        say!();
        say!(
            "This URL only works on this machine. To pair a phone, expose the server with \
             `maestro tunnel` (or set EXTERNAL_URL to its public URL)."
        );
    }
}

fn last_use(at: Option<i64>, address: Option<&str>) -> String {
    match (at, address) {
        (Some(at), Some(a)) => format!("{} from {a}", fmt_time(at)),
        (Some(at), None) => fmt_time(at),
        _ => "never".into(),
    }
}
