# The store's tables, as the DynamoDB adapter names them
# (shared/adapters/aws/src/dynamo/schema.rs; a test checks they match).
#
# | table        | key               | indexes                                         | access pattern |
# |--------------|-------------------|-------------------------------------------------|----------------|
# | users        | id                | —                                               | user by id; by name through a `unique` guard item in meta |
# | tokens       | id                | by-user (user_id, id)                           | key by id; by key hash through a guard item; a user's keys |
# | channels     | id                | —                                               | read whole into the relay's snapshot |
# | meta         | pk, sk            | —                                               | revision, id sequences, unique guards, groups, prices, spend per key and period, alerts, codes |
# | usage        | request_id        | by-user, by-token (…, created_at)               | idempotent write by request id; a user's or key's usage by time |
# | reservations | request_id        | by-state (state, created_at)                    | hold/settle by request id; the sweeper's open holds by age; TTL on closed ones |
# | ledger       | user_id, id       | —                                               | a user's balance history |
#
# The account tables (shared/adapters/aws/src/dynamo/accounts.rs explains the layout):
#
# | table          | key              | indexes                                          | access pattern |
# |----------------|------------------|--------------------------------------------------|----------------|
# | accounts       | user_id          | —                                                | account by user; by email through a `unique` guard item in meta |
# | sessions       | id               | —                                                | session by the id its access token carries; TTL a week after expiry |
# | user-links     | user_id, sk      | —                                                | a user's sessions and identities, listed consistently; TTL on session links |
# | refresh-tokens | hash             | —                                                | every refresh token a session had (a replay is recognised); TTL |
# | tickets        | hash             | by-user (user_id, purpose)                       | single-use take by hash; a user's tickets of a purpose; TTL |
# | identities     | provider_subject | —                                                | the linked user of a provider's subject |
# | signing-keys   | kid              | —                                                | JWT signing keys (a handful, scanned) |
# | audit          | id               | by-month (month, id), by-actor, by-target (…, id) | newest-first pages: all (by month), by actor, by target, involving (both) |
locals {
  tables = {
    users        = { hash = ["id", "N"], range = null, indexes = {}, ttl = null }
    tokens       = { hash = ["id", "N"], range = null, indexes = { "by-user" = { hash = ["user_id", "N"], range = ["id", "N"] } }, ttl = null }
    channels     = { hash = ["id", "N"], range = null, indexes = {}, ttl = null }
    meta         = { hash = ["pk", "S"], range = ["sk", "S"], indexes = {}, ttl = null }
    usage        = { hash = ["request_id", "S"], range = null, indexes = { "by-user" = { hash = ["user_id", "N"], range = ["created_at", "N"] }, "by-token" = { hash = ["token_id", "N"], range = ["created_at", "N"] } }, ttl = null }
    reservations = { hash = ["request_id", "S"], range = null, indexes = { "by-state" = { hash = ["state", "S"], range = ["created_at", "N"] } }, ttl = "ttl" }
    ledger       = { hash = ["user_id", "N"], range = ["id", "N"], indexes = {}, ttl = null }

    accounts         = { hash = ["user_id", "N"], range = null, indexes = {}, ttl = null }
    sessions         = { hash = ["id", "S"], range = null, indexes = {}, ttl = "ttl" }
    "user-links"     = { hash = ["user_id", "N"], range = ["sk", "S"], indexes = {}, ttl = "ttl" }
    "refresh-tokens" = { hash = ["hash", "S"], range = null, indexes = {}, ttl = "ttl" }
    tickets          = { hash = ["hash", "S"], range = null, indexes = { "by-user" = { hash = ["user_id", "N"], range = ["purpose", "S"] } }, ttl = "ttl" }
    identities       = { hash = ["provider_subject", "S"], range = null, indexes = {}, ttl = null }
    "signing-keys"   = { hash = ["kid", "S"], range = null, indexes = {}, ttl = null }
    audit            = { hash = ["id", "S"], range = null, indexes = { "by-month" = { hash = ["month", "S"], range = ["id", "S"] }, "by-actor" = { hash = ["actor_id", "N"], range = ["id", "S"] }, "by-target" = { hash = ["target_id", "N"], range = ["id", "S"] } }, ttl = null }
  }
}

resource "aws_dynamodb_table" "t" {
  for_each     = local.tables
  name         = "${var.name}-${each.key}"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = each.value.hash[0]
  range_key    = each.value.range == null ? null : each.value.range[0]

  dynamic "attribute" {
    for_each = distinct(concat(
      [each.value.hash],
      each.value.range == null ? [] : [each.value.range],
      flatten([for i in values(each.value.indexes) : [i.hash, i.range]]),
    ))
    content {
      name = attribute.value[0]
      type = attribute.value[1]
    }
  }

  dynamic "global_secondary_index" {
    for_each = each.value.indexes
    content {
      name            = global_secondary_index.key
      hash_key        = global_secondary_index.value.hash[0]
      range_key       = global_secondary_index.value.range[0]
      projection_type = "ALL"
    }
  }

  dynamic "ttl" {
    for_each = each.value.ttl == null ? [] : [each.value.ttl]
    content {
      attribute_name = ttl.value
      enabled        = true
    }
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.main.arn
  }

  deletion_protection_enabled = true
}
