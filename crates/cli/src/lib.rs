//! Rust client of the Infernet node and router, and the library behind the `infernet` command.
//!
//! ```no_run
//! # async fn example() -> Result<(), infernet_cli::client::ClientError> {
//! use std::time::Duration;
//! use infernet_cli::client::NodeClient;
//!
//! let node = NodeClient::new("localhost:4000")?;
//! let data = serde_json::json!({"name": "ada"});
//! let id = node.submit(&["hello-world".to_string()], &data, false).await?;
//! let job = node.wait(&id, Duration::from_secs(30)).await?;
//! println!("{:?}", job.result);
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod delegate;
