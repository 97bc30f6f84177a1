//! The transaction's protobuf shapes: status and record conversions.

use corebank_platform::time::to_timestamp;
use corebank_proto::v1 as pb;
use uuid::Uuid;

use crate::domain::{MoneyInput, Transaction, TransactionStatus};
use crate::messages::{self, kind_to_proto};

pub(super) fn is_terminal(transaction: &pb::Transaction) -> bool {
    matches!(
        pb::TransactionStatus::try_from(transaction.status),
        Ok(pb::TransactionStatus::Completed | pb::TransactionStatus::Failed)
    )
}

pub fn status_to_proto(status: TransactionStatus) -> pb::TransactionStatus {
    match status {
        TransactionStatus::Pending => pb::TransactionStatus::Pending,
        TransactionStatus::Processing => pb::TransactionStatus::Processing,
        TransactionStatus::Review => pb::TransactionStatus::Review,
        TransactionStatus::Completed => pb::TransactionStatus::Completed,
        TransactionStatus::Failed => pb::TransactionStatus::Failed,
    }
}

pub(super) fn status_from_proto(status: pb::TransactionStatus) -> Option<TransactionStatus> {
    match status {
        pb::TransactionStatus::Unspecified => None,
        pb::TransactionStatus::Pending => Some(TransactionStatus::Pending),
        pb::TransactionStatus::Processing => Some(TransactionStatus::Processing),
        pb::TransactionStatus::Review => Some(TransactionStatus::Review),
        pb::TransactionStatus::Completed => Some(TransactionStatus::Completed),
        pb::TransactionStatus::Failed => Some(TransactionStatus::Failed),
    }
}

pub fn to_proto(transaction: &Transaction) -> pb::Transaction {
    let id = |account_id: Option<Uuid>| account_id.map(|id| id.to_string()).unwrap_or_default();
    pb::Transaction {
        transaction_id: transaction.transaction_id.to_string(),
        kind: kind_to_proto(transaction.kind) as i32,
        status: status_to_proto(transaction.status) as i32,
        source_account_id: id(transaction.source_account_id),
        destination_account_id: id(transaction.destination_account_id),
        amount: Some(messages::money(transaction.currency, transaction.amount)),
        description: transaction.description.clone(),
        failure_reason: transaction.failure_reason.clone(),
        failure_detail: transaction.failure_detail.clone(),
        journal_id: transaction.journal_id.clone(),
        create_time: Some(to_timestamp(transaction.created_at)),
        update_time: Some(to_timestamp(transaction.updated_at)),
    }
}

pub(super) fn money_input(money: Option<&pb::Money>) -> Option<MoneyInput<'_>> {
    money.map(|money| MoneyInput {
        currency: &money.currency,
        amount: &money.amount,
    })
}
