//! The messages the function sends, and sending them off the response path
//! (so an answer takes as long whether or not a message went out).

use oblivious_ports::{Mail, Mailer, Platform, Tasks};

use crate::Auth;

impl<P: Platform> Auth<P> {
    /// Sends in the background; a failure is logged (without the link).
    pub(crate) fn send(&self, mail: Mail) {
        let relay = self.relay.clone();
        self.relay.ports.tasks.spawn(async move {
            let subject = mail.subject.clone();
            if let Err(e) = relay.ports.mailer.send(mail).await {
                tracing::warn!(subject, "mail not sent: {e}");
            }
        });
    }

    pub(crate) fn link(&self, page: &str, token: &str) -> String {
        format!("{}/{page}?token={token}", self.settings().base_url())
    }
}

pub(crate) fn verify_email(to: &str, link: &str, minutes: u64) -> Mail {
    Mail {
        to: to.into(),
        subject: "Verify your email address".into(),
        text: format!(
            "Welcome to Oblivious.\n\nOpen this link to verify your address (it expires in {minutes} minutes):\n\n{link}\n\n\
             If you did not sign up, ignore this message.\n"
        ),
    }
}

pub(crate) fn reset_password(to: &str, link: &str, minutes: u64) -> Mail {
    Mail {
        to: to.into(),
        subject: "Reset your password".into(),
        text: format!(
            "Someone asked to reset the password of this Oblivious account.\n\n\
             Open this link to choose a new one (it expires in {minutes} minutes; it works once):\n\n{link}\n\n\
             If it was not you, ignore this message: your password stays as it is.\n"
        ),
    }
}
