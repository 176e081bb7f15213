//! Windows: no approval dialog yet. Showing one in the user's session from a service needs a
//! helper started in that session (WTSQueryUserToken + CreateProcessAsUser), which is not built;
//! the channel says so and the admin channel is the way to approve.

use super::super::types::UserAnswer;

/// What every ask answers on Windows today.
pub(super) fn unavailable() -> UserAnswer {
    UserAnswer::Unavailable("the Windows approval helper is not built yet".into())
}
