-- 7 (PostgreSQL only): admission and claims are the shared store's statements now, not functions.
DROP FUNCTION IF EXISTS atelier_admit_v1(text[], jsonb, text, bigint, bigint, float8, boolean, float8, bigint, bigint, bigint, float8);
DROP FUNCTION IF EXISTS atelier_claim_v1(text, float8, float8, bigint);
