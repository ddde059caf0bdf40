//! Who may do what: the operations the server implements, the roles that may call
//! each, and the caller a request was signed by.

use super::error::{EbsError, Ec2Error};
use super::keys::{Key, Role};
use super::OWNER_ID;
use axum::http::{Method, StatusCode};

/// Every operation the server implements (EBS direct API and EC2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    StartSnapshot,
    PutSnapshotBlock,
    CompleteSnapshot,
    ListSnapshotBlocks,
    ListChangedBlocks,
    GetSnapshotBlock,
    DescribeSnapshots,
    DeleteSnapshot,
    CreateTags,
    DeleteTags,
}

use Operation::*;

impl Operation {
    /// The EBS operation at `method path`; `None` for a path the router does not know
    /// (it answers UnknownOperationException, whoever asks).
    pub fn of_ebs(method: &Method, path: &str) -> Option<Operation> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), parts.as_slice()) {
            ("POST", ["snapshots"]) => Some(StartSnapshot),
            ("POST", ["snapshots", "completion", _]) => Some(CompleteSnapshot),
            ("GET", ["snapshots", _, "blocks"]) => Some(ListSnapshotBlocks),
            ("GET", ["snapshots", _, "changedblocks"]) => Some(ListChangedBlocks),
            ("GET", ["snapshots", _, "blocks", _]) => Some(GetSnapshotBlock),
            ("PUT", ["snapshots", _, "blocks", _]) => Some(PutSnapshotBlock),
            _ => None,
        }
    }

    /// The EC2 action of that name; `None` for one the server does not implement.
    pub fn of_ec2(action: &str) -> Option<Operation> {
        Some(match action {
            "DescribeSnapshots" => DescribeSnapshots,
            "DeleteSnapshot" => DeleteSnapshot,
            "CreateTags" => CreateTags,
            "DeleteTags" => DeleteTags,
            _ => return None,
        })
    }
}

impl Role {
    /// Whether the role may call `op` at all. (A backup key's CreateTags and
    /// DeleteTags are further limited: they may not remove ebsnap's own tags, see
    /// [`Caller::may_remove_ebsnap_tags`].)
    pub fn allows(self, op: Operation) -> bool {
        match self {
            Role::Admin => true,
            Role::Backup => !matches!(op, DeleteSnapshot),
            Role::Read => matches!(
                op,
                ListSnapshotBlocks | ListChangedBlocks | GetSnapshotBlock | DescribeSnapshots
            ),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Backup => "backup",
            Role::Read => "read",
        }
    }
}

/// Who signed a request: travels with it (an extension) from admission to the handler.
#[derive(Clone, Debug)]
pub struct Caller {
    pub access_key_id: String,
    pub role: Role,
    /// The account id whose snapshots the caller sees and starts.
    pub owner: String,
}

impl Caller {
    /// The caller of a server without authentication: an admin, owner [`OWNER_ID`].
    pub fn open() -> Caller {
        Caller {
            access_key_id: String::new(),
            role: Role::Admin,
            owner: OWNER_ID.to_owned(),
        }
    }

    pub fn of(key: &Key) -> Caller {
        Caller {
            access_key_id: key.credentials.access_key_id.clone(),
            role: key.role,
            owner: key.owner.clone(),
        }
    }

    /// Whether the caller sees every owner's snapshots.
    pub fn sees_all(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the caller may delete or overwrite `ebsnap:` tags: retention judges by
    /// them (docs/retention.md), so changing one is as strong as a delete.
    pub fn may_remove_ebsnap_tags(&self) -> bool {
        self.role == Role::Admin
    }

    fn denial(&self, what: &str) -> String {
        tracing::info!(
            "refused {what} to key {} (role {})",
            self.access_key_id,
            self.role.as_str()
        );
        format!(
            "The key {} (role {}) is not authorized to perform: {what}",
            self.access_key_id,
            self.role.as_str()
        )
    }

    /// An EBS refusal: AccessDeniedException, HTTP 403, as the EBS model shapes it.
    pub fn ebs_denied(&self, what: &str) -> EbsError {
        EbsError {
            status: StatusCode::FORBIDDEN,
            error_type: "AccessDeniedException",
            reason: Some("UNAUTHORIZED_ACCOUNT"),
            message: self.denial(what),
        }
    }

    /// An EC2 refusal: UnauthorizedOperation, HTTP 403.
    pub fn ec2_denied(&self, what: &str) -> Ec2Error {
        Ec2Error {
            status: StatusCode::FORBIDDEN,
            code: "UnauthorizedOperation".into(),
            message: self.denial(what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Operation; 10] = [
        StartSnapshot,
        PutSnapshotBlock,
        CompleteSnapshot,
        ListSnapshotBlocks,
        ListChangedBlocks,
        GetSnapshotBlock,
        DescribeSnapshots,
        DeleteSnapshot,
        CreateTags,
        DeleteTags,
    ];

    #[test]
    fn each_role_may_call_its_operations() {
        let allowed = |role: Role| ALL.iter().filter(|op| role.allows(**op)).count();
        assert_eq!(allowed(Role::Admin), 10);
        assert_eq!(allowed(Role::Backup), 9);
        assert!(!Role::Backup.allows(DeleteSnapshot));
        assert_eq!(allowed(Role::Read), 4);
        for op in [
            StartSnapshot,
            PutSnapshotBlock,
            CompleteSnapshot,
            CreateTags,
            DeleteTags,
        ] {
            assert!(!Role::Read.allows(op), "{op:?}");
        }
    }

    #[test]
    fn ebs_operations_are_known_by_method_and_path() {
        let of = |m: Method, p: &str| Operation::of_ebs(&m, p);
        assert_eq!(of(Method::POST, "/snapshots"), Some(StartSnapshot));
        assert_eq!(
            of(Method::PUT, "/snapshots/snap-1/blocks/3"),
            Some(PutSnapshotBlock)
        );
        assert_eq!(
            of(Method::GET, "/snapshots/snap-1/blocks/3"),
            Some(GetSnapshotBlock)
        );
        assert_eq!(
            of(Method::GET, "/snapshots/snap-1/blocks"),
            Some(ListSnapshotBlocks)
        );
        assert_eq!(
            of(Method::GET, "/snapshots/s/changedblocks"),
            Some(ListChangedBlocks)
        );
        assert_eq!(
            of(Method::POST, "/snapshots/completion/s"),
            Some(CompleteSnapshot)
        );
        assert_eq!(of(Method::DELETE, "/snapshots"), None);
    }
}
