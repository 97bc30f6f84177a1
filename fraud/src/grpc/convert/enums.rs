//! Proto ⇄ domain for the fraud enums and for durations. An unspecified
//! proto enum is `None` where the domain may default it, refused where it
//! may not; an unknown number is always refused.

use std::time::Duration;

use corebank_proto::v1 as pb;

use crate::domain::{Action, Outcome, RuleKind, TimeoutAction, TransactionKind, Window};

/// A proto action; `None` when unspecified.
pub fn action_from_proto(value: i32) -> Result<Option<Action>, &'static str> {
    match pb::FraudAction::try_from(value) {
        Ok(pb::FraudAction::Unspecified) => Ok(None),
        Ok(pb::FraudAction::Approve) => Ok(Some(Action::Approve)),
        Ok(pb::FraudAction::Review) => Ok(Some(Action::Review)),
        Ok(pb::FraudAction::Decline) => Ok(Some(Action::Decline)),
        Ok(pb::FraudAction::Alert) => Ok(Some(Action::Alert)),
        Err(_) => Err("is not a known fraud action"),
    }
}

pub fn action_to_proto(action: Action) -> pb::FraudAction {
    match action {
        Action::Approve => pb::FraudAction::Approve,
        Action::Review => pb::FraudAction::Review,
        Action::Decline => pb::FraudAction::Decline,
        Action::Alert => pb::FraudAction::Alert,
    }
}

/// A decision's outcome as the proto's action.
pub fn outcome_to_proto(outcome: Outcome) -> pb::FraudAction {
    match outcome {
        Outcome::Approve => pb::FraudAction::Approve,
        Outcome::Review => pb::FraudAction::Review,
        Outcome::Decline => pb::FraudAction::Decline,
    }
}

pub fn timeout_action_to_proto(action: TimeoutAction) -> pb::FraudAction {
    match action {
        TimeoutAction::Approve => pb::FraudAction::Approve,
        TimeoutAction::Decline => pb::FraudAction::Decline,
    }
}

/// A proto rule kind; `None` when unspecified.
pub fn rule_kind_from_proto(value: i32) -> Result<Option<RuleKind>, &'static str> {
    let kind = pb::RuleKind::try_from(value).map_err(|_| "is not a known rule kind")?;
    Ok(RuleKind::ALL
        .into_iter()
        .find(|candidate| rule_kind_to_proto(*candidate) == kind))
}

pub fn rule_kind_to_proto(kind: RuleKind) -> pb::RuleKind {
    match kind {
        RuleKind::AmountAbove => pb::RuleKind::AmountAbove,
        RuleKind::VelocityCount => pb::RuleKind::VelocityCount,
        RuleKind::VelocitySum => pb::RuleKind::VelocitySum,
        RuleKind::FirstPayeeAmount => pb::RuleKind::FirstPayeeAmount,
        RuleKind::FanIn => pb::RuleKind::FanIn,
        RuleKind::AnomalyScore => pb::RuleKind::AnomalyScore,
        RuleKind::Watchlist => pb::RuleKind::Watchlist,
        RuleKind::Structuring => pb::RuleKind::Structuring,
        RuleKind::NewAccount => pb::RuleKind::NewAccount,
    }
}

/// A proto transaction kind; unspecified is refused.
pub fn transaction_kind_from_proto(value: i32) -> Result<TransactionKind, &'static str> {
    match pb::TransactionKind::try_from(value) {
        Ok(pb::TransactionKind::Transfer) => Ok(TransactionKind::Transfer),
        Ok(pb::TransactionKind::Deposit) => Ok(TransactionKind::Deposit),
        Ok(pb::TransactionKind::Withdrawal) => Ok(TransactionKind::Withdrawal),
        Ok(pb::TransactionKind::Unspecified) => Err("is required: TRANSFER, DEPOSIT or WITHDRAWAL"),
        Err(_) => Err("is not a known transaction kind"),
    }
}

pub fn transaction_kind_to_proto(kind: TransactionKind) -> pb::TransactionKind {
    match kind {
        TransactionKind::Transfer => pb::TransactionKind::Transfer,
        TransactionKind::Deposit => pb::TransactionKind::Deposit,
        TransactionKind::Withdrawal => pb::TransactionKind::Withdrawal,
    }
}

/// A proto feature window; `None` when unspecified.
pub fn window_from_proto(value: i32) -> Result<Option<Window>, &'static str> {
    match pb::FeatureWindow::try_from(value) {
        Ok(pb::FeatureWindow::Unspecified) => Ok(None),
        Ok(pb::FeatureWindow::FeatureWindow1h) => Ok(Some(Window::H1)),
        Ok(pb::FeatureWindow::FeatureWindow24h) => Ok(Some(Window::H24)),
        Ok(pb::FeatureWindow::FeatureWindow7d) => Ok(Some(Window::D7)),
        Err(_) => Err("is not a known feature window"),
    }
}

pub fn window_to_proto(window: Window) -> pb::FeatureWindow {
    match window {
        Window::H1 => pb::FeatureWindow::FeatureWindow1h,
        Window::H24 => pb::FeatureWindow::FeatureWindow24h,
        Window::D7 => pb::FeatureWindow::FeatureWindow7d,
    }
}

/// An optional non-negative duration in whole seconds.
pub fn parse_duration(
    duration: Option<&prost_types::Duration>,
) -> Result<Option<Duration>, &'static str> {
    let Some(duration) = duration else {
        return Ok(None);
    };
    if duration.seconds < 0 || duration.nanos < 0 {
        return Err("must not be negative");
    }
    if duration.nanos != 0 {
        return Err("must be whole seconds");
    }
    Ok(Some(Duration::from_secs(duration.seconds.unsigned_abs())))
}

pub fn duration_to_proto(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}
