//! The administrative commands: `waymark migrate` and `waymark user create`.
use crate::{
    auth::create_user,
    config::{CreateUser, DbConfig, UserCommand},
    db,
};

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
