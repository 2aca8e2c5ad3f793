//! The command line: `waymark serve`, and the administrative commands `waymark migrate` and
//! `waymark user create`.
use clap::{Args, Parser, Subcommand};

use crate::{
    auth::{create_user, Role},
    config::{DbConfig, LogFormat, ServeConfig},
    db,
};

#[derive(Parser)]
#[command(name = "waymark", version, about = "Live GPS fleet tracking")]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "WAYMARK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the HTTP and WebSocket server (migrates the database first).
    Serve(Box<ServeConfig>),
    /// Apply the database migrations and exit.
    Migrate(DbConfig),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (and its organisation if it does not exist); prints the user id.
    Create(CreateUser),
}

#[derive(Args)]
pub struct CreateUser {
    #[command(flatten)]
    pub db: DbConfig,
    /// Organisation name.
    #[arg(long)]
    pub org: String,
    #[arg(long)]
    pub email: String,
    /// At least 8 characters.
    #[arg(long, env = "WAYMARK_USER_PASSWORD", hide_env_values = true)]
    pub password: String,
    #[arg(long, value_enum)]
    pub role: Role,
    /// Succeed without changes when a user with this email already exists.
    #[arg(long)]
    pub if_not_exists: bool,
}

pub async fn migrate(config: &DbConfig) -> anyhow::Result<()> {
    let pool = db::connect(config).await?;
    db::migrate(&pool).await?;
    println!("database is up to date");
    Ok(())
}

pub async fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create(args) => create(args).await,
    }
}

async fn create(args: CreateUser) -> anyhow::Result<()> {
    let email = args.email.trim().to_owned();
    anyhow::ensure!(
        email.contains('@') && email.len() <= 320,
        "--email must be an email address"
    );
    anyhow::ensure!(
        args.password.chars().count() >= 8,
        "--password must have at least 8 characters"
    );
    anyhow::ensure!(!args.org.trim().is_empty(), "--org must not be empty");
    let pool = db::connect(&args.db).await?;
    db::migrate(&pool).await?;
    let existing =
        sqlx::query_scalar!("SELECT id FROM users WHERE lower(email) = lower($1)", email)
            .fetch_optional(&pool)
            .await?;
    if let Some(id) = existing {
        anyhow::ensure!(
            args.if_not_exists,
            "a user with email {email} already exists (id {id})"
        );
        println!("{id}");
        return Ok(());
    }
    let id = create_user(&pool, &args.org, &email, &args.password, args.role).await?;
    println!("{id}");
    Ok(())
}
