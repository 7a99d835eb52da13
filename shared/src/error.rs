//! The library's one error type, and how a failure from AWS is told apart as transient or not.

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Whether retrying could help: this decides if an invocation fails for Lambda to retry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request itself is wrong (unknown payload, malformed envelope, bad setting).
    Input,
    /// The same request may succeed later (throttling, 5xx, timeouts, dropped connections).
    Transient,
    /// It will fail again until an operator changes something (too large, access denied).
    Permanent,
}

/// A failure, with a message that names the app, release, key or setting involved and never a
/// secret value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{variable}: {message}")]
    Config {
        variable: &'static str,
        message: String,
    },
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Transient(String),
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::Config { .. } | Error::Input(_) => Kind::Input,
            Error::Permanent(_) => Kind::Permanent,
            Error::Transient(_) => Kind::Transient,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind() == Kind::Transient
    }

    /// Wraps an AWS failure with what was being done, keeping its transient or permanent kind.
    pub fn from_aws(context: impl std::fmt::Display, err: AwsError) -> Self {
        let message = format!("{context}: {err}");
        if err.transient {
            Error::Transient(message)
        } else {
            Error::Permanent(message)
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed AWS call, reduced to what the callers decide on: the service's error code, a
/// readable message and whether a retry could succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AwsError {
    pub code: Option<String>,
    pub message: String,
    pub transient: bool,
}

/// Service error codes that mean "try again later" whatever the HTTP status says.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestTimeout",
    "InternalServiceError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "KMSInternalException",
];

impl AwsError {
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// An error raised by our own checks around an AWS call rather than by the service.
    pub fn permanent(message: impl Into<String>) -> Self {
        AwsError {
            code: None,
            message: message.into(),
            transient: false,
        }
    }
}

impl<E> From<SdkError<E, HttpResponse>> for AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn from(err: SdkError<E, HttpResponse>) -> Self {
        let code = err.code().map(str::to_owned);
        let transient = match &err {
            SdkError::DispatchFailure(_)
            | SdkError::TimeoutError(_)
            | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                status >= 500
                    || status == 429
                    || code
                        .as_deref()
                        .is_some_and(|code| TRANSIENT_CODES.contains(&code))
            }
            _ => false,
        };
        let message = match (&code, err.message()) {
            (Some(code), Some(text)) => format!("{code}: {text}"),
            (Some(code), None) => code.clone(),
            _ => DisplayErrorContext(&err).to_string(),
        };
        AwsError {
            code,
            message,
            transient,
        }
    }
}
