//! sqlx `Type`, `Encode` and `Decode` for [`OrgId`], [`UserId`] and [`Role`], so that
//! `.bind(org)`, `query_as::<_, (OrgId, UserId, Role)>` and `query_scalar::<_, Role>` work
//! directly. They travel as `uuid` and `text`; decoding validates (`UserId::new`,
//! `Role::from_str`), because a `UserId` is later written into SQL as a literal.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};
use uuid::Uuid;

use crate::ids::{OrgId, UserId};
use crate::role::Role;

impl Type<Postgres> for OrgId {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Uuid as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for OrgId {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Uuid as Encode<Postgres>>::encode_by_ref(self.as_uuid(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for OrgId {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(OrgId::from_uuid(<Uuid as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Postgres> for UserId {
    fn type_info() -> PgTypeInfo {
        <str as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <str as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for UserId {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Postgres>>::encode(self.as_str(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for UserId {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(UserId::new(<&str as Decode<Postgres>>::decode(value)?)?)
    }
}

impl Type<Postgres> for Role {
    fn type_info() -> PgTypeInfo {
        <str as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <str as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Role {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Postgres>>::encode(self.as_str(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Role {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(<&str as Decode<Postgres>>::decode(value)?.parse()?)
    }
}
