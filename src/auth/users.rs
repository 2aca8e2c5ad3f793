//! Creating people. Used by `waymark user create`, `POST /users` and the tests.
use sqlx::{PgConnection, PgPool};

use super::{hash_password, Role};

/// Creates a user, and its organisation if there is none of that name. Returns the user's id.
pub async fn create_user(
    pool: &PgPool,
    organisation: &str,
    email: &str,
    password: &str,
    role: Role,
) -> anyhow::Result<i64> {
    let hash = hash_password(password.to_owned()).await?;
    let mut tx = pool.begin().await?;
    let org_id = sqlx::query_scalar!(
        "INSERT INTO organisations (name) VALUES ($1)
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        organisation.trim()
    )
    .fetch_one(&mut *tx)
    .await?;
    let id = insert_user(&mut tx, org_id, email, &hash, role).await?;
    tx.commit().await?;
    Ok(id)
}

/// Stores a user of organisation `org_id` with an already hashed password. Returns the id; an
/// email in use (whatever its case) fails on the unique index `users_email_key`.
pub async fn insert_user(
    conn: &mut PgConnection,
    org_id: i64,
    email: &str,
    password_hash: &str,
    role: Role,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO users (organisation_id, email, password_hash, role) VALUES ($1, $2, $3, $4)
         RETURNING id",
        org_id,
        email.trim(),
        password_hash,
        role.as_str()
    )
    .fetch_one(conn)
    .await
}
