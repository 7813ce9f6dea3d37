-- Every index on audit_logs is paid for by the signer on each row it appends. The user feed and usage
-- queries look users up by coalesce(user_email, user_id) (audit_logs_user_key_feed_idx, 0400); nothing
-- reads audit_logs by user_id alone, so its index from 0001 only slowed appends.
DROP INDEX IF EXISTS audit_logs_user_idx;
