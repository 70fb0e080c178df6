//! Lines of `learner-sync check`: one per probe, with a hint when it failed.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckLine {
    pub ok: bool,
    pub message: String,
    /// What to do about a failure.
    pub hint: Option<String>,
}

impl CheckLine {
    pub fn ok(message: impl Into<String>) -> Self {
        CheckLine {
            ok: true,
            message: message.into(),
            hint: None,
        }
    }

    /// Works now, but needs attention soon (a credential about to expire): shown as
    /// `warn`, and `check` still passes.
    pub fn warning(message: impl Into<String>, hint: impl Into<String>) -> Self {
        CheckLine {
            ok: true,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn failed(message: impl Into<String>, hint: impl Into<String>) -> Self {
        CheckLine {
            ok: false,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}
