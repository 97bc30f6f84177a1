//! What the `corebank` binary's exit status means: one code per class of
//! outcome, so a script tells "the transfer failed" from "the server is
//! down" from "the command was typed wrong" without reading stderr.
//!
//! An error says its class in one of two ways: a [`Classified`] error made
//! where the class is known (a movement that ended FAILED, a mismatch a
//! check found, an argument refused before any call), or what it wraps: a
//! gRPC status by its code, a transport or connection error as unavailable.
//! Anything else is an internal error.

use std::fmt;
use std::process::ExitCode;

/// The exit-code table, as `corebank --help` prints it (README.md's `## CLI`
/// says the same).
pub const TABLE: &str = "\
Exit status:
  0  done (a money movement COMPLETED; a check found nothing wrong)
  1  a check found a problem: `reconcile` a mismatch, `audit` a broken
     invariant, `export verify|verify-proof` files that do not verify,
     `bench` and `bench-gateway` a run with errors or broken invariants
  2  bad input: a usage error, or the server refused the request as given
     (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE, NOT_FOUND,
     ALREADY_EXISTS), or a local file or argument that cannot be used
  3  unavailable: cannot connect, UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED,
     RESOURCE_EXHAUSTED, ABORTED (the same command may succeed later)
  4  a money movement (deposit, withdraw, transfer) ended FAILED
  5  a money movement was not finished when --wait ran out (PENDING, or in
     fraud REVIEW); follow it with `corebank transaction watch <id>`
  6  denied: UNAUTHENTICATED or PERMISSION_DENIED
  7  any other error (INTERNAL, UNKNOWN, a local I/O error)
A reader that stops early (`corebank saga list | head -1`) changes nothing:
the command stops writing quietly and exits with the code of its outcome.";

/// One class of outcome; its discriminant is the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done = 0,
    ProblemFound = 1,
    BadInput = 2,
    Unavailable = 3,
    MovementFailed = 4,
    MovementUnfinished = 5,
    Denied = 6,
    Internal = 7,
}

impl Exit {
    /// The class of a gRPC status code.
    pub fn of_code(code: tonic::Code) -> Self {
        use tonic::Code;
        match code {
            Code::Ok => Self::Done,
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::NotFound
            | Code::AlreadyExists => Self::BadInput,
            // tonic reports its own request timeout as CANCELLED.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted
            | Code::Aborted => Self::Unavailable,
            Code::Unauthenticated | Code::PermissionDenied => Self::Denied,
            Code::Unknown | Code::Internal | Code::Unimplemented | Code::DataLoss => Self::Internal,
        }
    }

    /// The class of `error`: the first cause in its chain that says one.
    pub fn of(error: &anyhow::Error) -> Self {
        for cause in error.chain() {
            if let Some(classified) = cause.downcast_ref::<Classified>() {
                return classified.exit;
            }
            if let Some(status) = cause.downcast_ref::<tonic::Status>() {
                return Self::of_code(status.code());
            }
            if cause.downcast_ref::<tonic::transport::Error>().is_some() {
                return Self::Unavailable;
            }
            if let Some(sql) = cause.downcast_ref::<sqlx::Error>()
                && matches!(
                    sql,
                    sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)
                )
            {
                return Self::Unavailable;
            }
            if let Some(io) = cause.downcast_ref::<std::io::Error>()
                && is_unreachable(io.kind())
            {
                return Self::Unavailable;
            }
        }
        Self::Internal
    }
}

fn is_unreachable(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind;
    matches!(
        kind,
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::TimedOut
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::AddrNotAvailable
    )
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// An error whose exit class was decided where it arose.
#[derive(Debug)]
pub struct Classified {
    pub exit: Exit,
    message: String,
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Classified {}

/// An error of class `exit` saying `message`.
pub fn fail(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        exit,
        message: message.into(),
    })
}

/// `error` as bad input (a file or argument that cannot be used), saying
/// its message and causes in one line.
pub fn bad_input(error: anyhow::Error) -> anyhow::Error {
    fail(Exit::BadInput, format!("{error:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_classified_by_its_code_even_under_context() {
        let refused = anyhow::Error::new(tonic::Status::invalid_argument("amount"))
            .context("creating the transfer");
        assert_eq!(Exit::of(&refused), Exit::BadInput);
        let down = anyhow::Error::new(tonic::Status::unavailable("tcp connect error"));
        assert_eq!(Exit::of(&down), Exit::Unavailable);
        let denied = anyhow::Error::new(tonic::Status::permission_denied("scope"));
        assert_eq!(Exit::of(&denied), Exit::Denied);
        let internal = anyhow::Error::new(tonic::Status::internal("boom"));
        assert_eq!(Exit::of(&internal), Exit::Internal);
    }

    #[test]
    fn a_classified_error_keeps_its_class_and_anything_else_is_internal() {
        assert_eq!(
            Exit::of(&fail(Exit::MovementFailed, "ended FAILED")),
            Exit::MovementFailed
        );
        let unreadable = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound));
        let marked = bad_input(unreadable.context("cannot read rules.json"));
        assert_eq!(Exit::of(&marked), Exit::BadInput);
        assert!(format!("{marked:#}").contains("cannot read rules.json"));
        assert_eq!(Exit::of(&anyhow::anyhow!("odd")), Exit::Internal);
        let refused =
            anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(Exit::of(&refused), Exit::Unavailable);
    }

    #[test]
    fn every_class_has_its_own_code() {
        let all = [
            Exit::Done,
            Exit::ProblemFound,
            Exit::BadInput,
            Exit::Unavailable,
            Exit::MovementFailed,
            Exit::MovementUnfinished,
            Exit::Denied,
            Exit::Internal,
        ];
        for (index, exit) in all.iter().enumerate() {
            assert_eq!(*exit as usize, index);
            assert!(
                TABLE.contains(&format!("\n  {index}  ")),
                "the table documents {exit:?}"
            );
        }
        // clap's own usage errors exit 2: bad input.
        assert_eq!(Exit::BadInput as i32, 2);
    }
}
