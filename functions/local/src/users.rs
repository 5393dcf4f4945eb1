//! `oblivious user …`: people and their sign-in, from the operator's shell
//! (the same store the server uses; the server picks changes up on its next
//! refresh).

use std::io::BufRead;
use std::path::Path;

use clap::Subcommand;
use oblivious_core::auth::password;
use oblivious_core::model::{Role, User, UserStatus};
use oblivious_ports::{Accounts, Clock, Ledger, NewAccount, NewUser, Page, Store, UserPatch};

use crate::cli::{relay, s};
use crate::platform::Local;

#[derive(Subcommand)]
pub enum UserCmd {
    /// Create a user (an API customer; with --email, one who can also sign in).
    Create {
        name: String,
        #[arg(long, default_value = oblivious_core::config::DEFAULT_GROUP)]
        group: String,
        /// Short for `--role admin`.
        #[arg(long, conflicts_with = "role")]
        admin: bool,
        /// root, admin or user.
        #[arg(long)]
        role: Option<String>,
        #[arg(long, default_value_t = 0)]
        quota: i64,
        /// No balance is enforced for this user.
        #[arg(long)]
        unlimited: bool,
        /// A sign-in email; the password is read from stdin (one line).
        #[arg(long)]
        email: Option<String>,
    },
    List,
    /// Credit a user's balance (a negative amount takes units back).
    Topup {
        name: String,
        #[arg(allow_negative_numbers = true)]
        units: i64,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Set a user's password from stdin (one line) and end their sessions.
    /// With --email, a user without a sign-in gets one.
    Passwd {
        /// User name or email.
        user: String,
        #[arg(long)]
        email: Option<String>,
    },
    /// Change a user's role (root, admin or user); the last root stays root.
    Role {
        user: String,
        role: String,
    },
    /// Refuse the user's keys and sessions.
    Disable {
        user: String,
    },
    Enable {
        user: String,
    },
    /// Turn a user's second factor off (a lost phone) and end their sessions.
    #[command(name = "2fa-reset")]
    TwoFaReset {
        user: String,
    },
    /// Print a new setup link for the root user's first sign-in.
    SetupLink {
        /// The web app's public origin (the config's `auth.base_url`).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base_url: String,
    },
}

fn parse_role(r: &str) -> Result<Role, String> {
    match r {
        "root" => Ok(Role::Root),
        "admin" => Ok(Role::Admin),
        "user" => Ok(Role::User),
        other => Err(format!("`{other}` is not a role (root, admin, user)")),
    }
}

/// A user by name, or by sign-in email when it has an `@`.
async fn find(store: &impl Accounts, users: &impl Store, who: &str) -> Result<User, String> {
    let id = if who.contains('@') {
        store.account_by_email(who).await.map_err(s)?.map(|a| a.user_id)
    } else {
        users.user_by_name(who).await.map_err(s)?.map(|u| u.id)
    };
    let id = id.ok_or_else(|| format!("no user `{who}`"))?;
    users.user(id).await.map_err(s)?.ok_or_else(|| format!("no user `{who}`"))
}

/// One line from stdin: the password (never an argument, which `ps` would show).
fn read_password(email: &str) -> Result<String, String> {
    eprintln!("Password (one line on stdin):");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(s)?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    password::check(&pw, email, 10).map_err(|w| w.message())?;
    password::hash(&pw, salt()).map_err(|e| format!("could not hash the password: {e}"))
}

fn salt() -> [u8; 16] {
    use oblivious_ports::Ids;
    let mut salt = [0u8; 16];
    salt[..8].copy_from_slice(&oblivious_native::RandomIds.random_u64().to_le_bytes());
    salt[8..].copy_from_slice(&oblivious_native::RandomIds.random_u64().to_le_bytes());
    salt
}

pub async fn run(data: &Path, cmd: UserCmd) -> Result<(), String> {
    let r = relay(data).await?;
    let store = &r.ports.store;
    let now = r.ports.clock.now_ms();
    match cmd {
        UserCmd::Create { name, group, admin, role, quota, unlimited, email } => {
            if !store.groups().await.map_err(s)?.iter().any(|g| g.name == group) {
                return Err(format!("there is no group `{group}`"));
            }
            oblivious_core::money::check_units(quota)
                .map_err(|_| format!("--quota must be 0 to {} units", oblivious_core::money::MAX_UNITS))?;
            let role =
                if admin { Role::Admin } else { role.as_deref().map(parse_role).transpose()?.unwrap_or(Role::User) };
            let new = NewUser { name, role, group, quota, unlimited };
            let u = match email {
                None => store.create_user(new, now).await.map_err(s)?,
                Some(email) => {
                    let email = email.trim().to_lowercase();
                    let hash = read_password(&email)?;
                    let display = email.split('@').next().unwrap_or_default().to_string();
                    let acct =
                        NewAccount { email, email_verified: true, password_hash: Some(hash), display_name: display };
                    store.create_account(new, acct, None, now).await.map_err(s)?.0
                }
            };
            println!("{}", u.id);
            Ok(())
        }
        UserCmd::Topup { name, units, note } => {
            let user = find(store, store, &name).await?;
            oblivious_core::money::check_delta(units)
                .map_err(|_| format!("UNITS must be within ±{} ($1 billion)", oblivious_core::money::MAX_UNITS))?;
            let kind = if units >= 0 { "topup" } else { "adjust" };
            let u = store.adjust_balance(user.id, units, kind, "cli", &note, now).await.map_err(s)?;
            println!("{}", u.quota);
            Ok(())
        }
        UserCmd::List => {
            let users = store.users(Page { offset: 0, limit: u64::MAX >> 1 }).await.map_err(s)?;
            println!("{:<5} {:<24} {:<30} {:<6} {:<12} {:<9} USED", "ID", "NAME", "EMAIL", "ROLE", "GROUP", "STATUS");
            for u in &users.items {
                let email = store.account(u.id).await.map_err(s)?.map(|a| a.email).unwrap_or_else(|| "-".into());
                let status = format!("{:?}", u.status).to_lowercase();
                let role = u.role.as_str();
                println!(
                    "{:<5} {:<24} {:<30} {:<6} {:<12} {:<9} {}",
                    u.id, u.name, email, role, u.group, status, u.used_quota
                );
            }
            Ok(())
        }
        UserCmd::Passwd { user, email } => {
            let u = find(store, store, &user).await?;
            match store.account(u.id).await.map_err(s)? {
                Some(mut acct) => {
                    acct.password_hash = Some(read_password(&acct.email)?);
                    acct.failed_signins = 0;
                    acct.locked_until = None;
                    store.update_account(acct, now).await.map_err(s)?;
                }
                None => {
                    let email = email.ok_or("this user has no sign-in yet: give it one with --email")?;
                    let email = email.trim().to_lowercase();
                    let hash = read_password(&email)?;
                    let display = email.split('@').next().unwrap_or_default().to_string();
                    let acct =
                        NewAccount { email, email_verified: true, password_hash: Some(hash), display_name: display };
                    store.attach_account(u.id, acct, now).await.map_err(s)?;
                }
            }
            let ended = store.revoke_sessions(u.id, None, now).await.map_err(s)?;
            eprintln!("password set for {}; {ended} session(s) ended", u.name);
            Ok(())
        }
        UserCmd::Role { user, role } => {
            let u = find(store, store, &user).await?;
            let role = parse_role(&role)?;
            if u.role == Role::Root && role != Role::Root {
                oblivious_admin::keep_a_root(&r, u.id).await.map_err(|e| e.message)?;
            }
            store.update_user(u.id, UserPatch { role: Some(role), ..Default::default() }).await.map_err(s)?;
            eprintln!("{} is now {}", u.name, role.as_str());
            Ok(())
        }
        UserCmd::Disable { user } => set_status(&r, &user, UserStatus::Disabled).await,
        UserCmd::Enable { user } => set_status(&r, &user, UserStatus::Enabled).await,
        UserCmd::TwoFaReset { user } => {
            let u = find(store, store, &user).await?;
            let mut acct = store.account(u.id).await.map_err(s)?.ok_or("this user has no sign-in")?;
            acct.totp_enabled = false;
            acct.totp_secret = None;
            acct.recovery_codes.clear();
            store.update_account(acct, now).await.map_err(s)?;
            let ended = store.revoke_sessions(u.id, None, now).await.map_err(s)?;
            eprintln!("two-factor sign-in is off for {}; {ended} session(s) ended", u.name);
            Ok(())
        }
        UserCmd::SetupLink { base_url } => {
            let root = store.user_by_name(crate::platform::ADMIN).await.map_err(s)?.ok_or("no root user")?;
            let settings = oblivious_core::auth::AuthSettings { base_url: Some(base_url), ..Default::default() };
            let auth = oblivious_auth::Auth::new(r.clone(), settings, false);
            println!("{}", auth.setup_link(root.id).await?);
            Ok(())
        }
    }
}

async fn set_status(r: &oblivious_relay::Relay<Local>, who: &str, status: UserStatus) -> Result<(), String> {
    let store = &r.ports.store;
    let u = find(store, store, who).await?;
    if u.role == Role::Root && status == UserStatus::Disabled {
        oblivious_admin::keep_a_root(r, u.id).await.map_err(|e| e.message)?;
    }
    store.update_user(u.id, UserPatch { status: Some(status), ..Default::default() }).await.map_err(s)?;
    if status == UserStatus::Disabled {
        store.revoke_sessions(u.id, None, r.ports.clock.now_ms()).await.map_err(s)?;
    }
    eprintln!("{} is {}", u.name, format!("{status:?}").to_lowercase());
    Ok(())
}
