//! The mail port: verification and password-reset messages. SMTP natively,
//! an HTTP mail API at the edge (a Worker cannot open SMTP connections).

use std::future::Future;

use crate::PortError;

/// One plain-text message to one recipient; the adapter adds the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
}

pub trait Mailer: Send + Sync + 'static {
    /// Hands the message to the mail system; Ok once it accepted it.
    fn send(&self, mail: Mail) -> impl Future<Output = Result<(), PortError>> + Send;
}
