# The functions: one binary of functions/lambda each, packaged as
# <artifacts_dir>/<function>/bootstrap.zip (a test checks every one exists
# in src/bin/). Each has its own role with only what it touches.
locals {
  # The account tables hold password hashes, sessions, sealed TOTP secrets and
  # signing keys: only a function with `accounts = true` reaches them (with
  # DeleteItem: tickets are taken by deleting them).
  account_tables = ["accounts", "sessions", "user-links", "refresh-tokens", "tickets", "identities", "signing-keys", "audit"]
  table_arns     = [for k, t in aws_dynamodb_table.t : t.arn if !contains(local.account_tables, k)]
  index_arns     = [for k, t in aws_dynamodb_table.t : "${t.arn}/index/*" if !contains(local.account_tables, k)]
  account_arns   = flatten([for k, t in aws_dynamodb_table.t : [t.arn, "${t.arn}/index/*"] if contains(local.account_tables, k)])
  read           = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan"]
  # TransactWriteItems is authorised per item action.
  write = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"]

  functions = {
    relay = {
      description = "OpenAI-, Anthropic- and Gemini-shaped endpoints, streamed (Function URL)"
      memory      = var.relay_memory_mb
      timeout     = 900
      concurrency = var.relay_concurrency
      dynamodb    = concat(local.read, local.write)
      sqs         = ["sqs:SendMessage"]
      accounts    = false
    }
    admin = {
      description = "Admin API and key owners' account endpoints (HTTP API)"
      memory      = 256
      timeout     = 60
      concurrency = 20
      dynamodb    = concat(local.read, local.write, ["dynamodb:DeleteItem"])
      sqs         = []
      # It serves /api/me/keys, and its role gate reads sessions and signing keys.
      accounts = true
    }
    auth = {
      description = "Sign-up, sign-in, sessions, two-factor and the signed-in user's account (HTTP API)"
      # Argon2id (19 MiB, t = 2) per sign-up and sign-in: Lambda's CPU grows with its memory.
      memory      = 512
      timeout     = 30
      concurrency = 20
      dynamodb    = concat(local.read, local.write, ["dynamodb:DeleteItem"])
      sqs         = []
      accounts    = true
    }
    usage = {
      description = "Usage consumer: SQS batches into the usage log and balances"
      memory      = 256
      timeout     = 30
      concurrency = 10
      dynamodb    = concat(local.read, local.write)
      sqs         = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility", "sqs:SendMessage"]
      accounts    = false
    }
    health = {
      description = "Scheduled channel probes: disable the failing, revive the recovered"
      memory      = 256
      timeout     = 120
      concurrency = 1
      dynamodb    = concat(local.read, local.write)
      sqs         = []
      accounts    = false
    }
    sweeper = {
      description = "Scheduled refund of reservations left open"
      memory      = 256
      timeout     = 120
      concurrency = 1
      dynamodb    = concat(local.read, local.write)
      sqs         = []
      accounts    = false
    }
  }
}

# Failed asynchronous invocations (the scheduled functions) land here.
resource "aws_sqs_queue" "async_dlq" {
  name                      = "${var.name}-async-dlq"
  message_retention_seconds = 1209600
  kms_master_key_id         = aws_kms_key.main.arn
}

resource "aws_cloudwatch_log_group" "fn" {
  for_each          = local.functions
  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "fn" {
  for_each           = local.functions
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "fn" {
  for_each = local.functions

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.fn[each.key].arn}:*"]
  }
  statement {
    sid       = "Store"
    actions   = each.value.dynamodb
    resources = concat(local.table_arns, local.index_arns)
  }
  statement {
    sid       = "Secrets"
    actions   = ["ssm:GetParameter"]
    resources = [aws_ssm_parameter.secret_key.arn, aws_ssm_parameter.redis_url.arn, aws_ssm_parameter.config.arn]
  }
  statement {
    sid       = "Keys"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }
  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.async_dlq.arn]
  }
  dynamic "statement" {
    for_each = each.value.accounts ? [1] : []
    content {
      sid       = "Accounts"
      actions   = concat(local.read, local.write, ["dynamodb:DeleteItem"])
      resources = local.account_arns
    }
  }
  dynamic "statement" {
    for_each = length(each.value.sqs) > 0 ? [1] : []
    content {
      sid       = "UsageQueue"
      actions   = each.value.sqs
      resources = [aws_sqs_queue.usage.arn]
    }
  }
}

resource "aws_iam_role_policy" "fn" {
  for_each = local.functions
  name     = "${var.name}-${each.key}"
  role     = aws_iam_role.fn[each.key].id
  policy   = data.aws_iam_policy_document.fn[each.key].json
}

# X-Ray accepts no resource-level permissions; the managed write-only policy is the narrowest.
resource "aws_iam_role_policy_attachment" "xray" {
  for_each   = local.functions
  role       = aws_iam_role.fn[each.key].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

resource "aws_lambda_function" "fn" {
  # checkov:skip=CKV_AWS_117:The functions call public LLM APIs and a managed Redis (Upstash) over TLS; a VPC would add NAT cost and cold-start latency without isolating anything.
  # checkov:skip=CKV_AWS_272:Artifacts are built from source by the operator (scripts/build-lambdas); code signing needs a Signer profile the operator owns.
  for_each                       = local.functions
  function_name                  = "${var.name}-${each.key}"
  description                    = each.value.description
  role                           = aws_iam_role.fn[each.key].arn
  filename                       = "${var.artifacts_dir}/${each.key}/bootstrap.zip"
  source_code_hash               = filebase64sha256("${var.artifacts_dir}/${each.key}/bootstrap.zip")
  handler                        = "bootstrap"
  runtime                        = "provided.al2023"
  architectures                  = [var.architecture]
  memory_size                    = each.value.memory
  timeout                        = each.value.timeout
  reserved_concurrent_executions = each.value.concurrency
  kms_key_arn                    = aws_kms_key.main.arn

  environment {
    variables = {
      OBLIVIOUS_TABLE_PREFIX     = "${var.name}-"
      OBLIVIOUS_USAGE_QUEUE_URL  = aws_sqs_queue.usage.url
      OBLIVIOUS_SECRET_KEY_PARAM = aws_ssm_parameter.secret_key.name
      OBLIVIOUS_REDIS_URL_PARAM  = aws_ssm_parameter.redis_url.name
      OBLIVIOUS_CONFIG_PARAM     = aws_ssm_parameter.config.name
      OBLIVIOUS_HOT_PREFIX       = "${var.name}:"
      RUST_LOG                   = "info"
    }
  }

  tracing_config {
    mode = "Active"
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.async_dlq.arn
  }

  depends_on = [aws_cloudwatch_log_group.fn, aws_iam_role_policy.fn]
}

# The relay: a Function URL streaming its responses. Callers authenticate
# with their API keys, which the relay checks itself.
resource "aws_lambda_function_url" "relay" {
  # checkov:skip=CKV_AWS_258:The relay is a public API authenticated by its own API keys (Bearer / x-api-key / x-goog-api-key), as OpenAI's is; IAM auth would lock out every SDK.
  function_name      = aws_lambda_function.fn["relay"].function_name
  authorization_type = "NONE"
  invoke_mode        = "RESPONSE_STREAM"
  # No `cors` block: the relay answers preflights and sends CORS headers itself
  # (`[relay.cors]`), as it does on every runtime, with the headers SDKs read exposed.
}

# One HTTP API (JSON answers need no streaming) in front of the admin and
# auth functions, routed per path to the function that owns it, so a client
# (the web app) has one base URL for all of /api/* as on the local runtime.
# The auth function owns /api/auth/* and /api/me*, except the signed-in
# user's keys (/api/me/keys*), which the admin function serves, and it serves
# the account parts of the admin API; everything else goes to admin. API
# Gateway picks the most specific route (an exact path before a greedy
# {proxy+}, a longer prefix first), so /api/me/keys/7 reaches admin and
# /api/me/sessions auth. A new auth route under /api/admin/ needs a line here
# (tests/tests/aws.rs sends its requests by this table). The resources keep
# their `admin` names (the API, its stage and log group) so an existing
# deployment keeps its URL.
locals {
  api_routes = {
    "$default"                            = "admin"
    "ANY /api/me/keys"                    = "admin"
    "ANY /api/me/keys/{proxy+}"           = "admin"
    "ANY /api/auth/{proxy+}"              = "auth"
    "ANY /api/me"                         = "auth"
    "ANY /api/me/{proxy+}"                = "auth"
    "ANY /api/admin/audit"                = "auth"
    "ANY /api/admin/invites"              = "auth"
    "ANY /api/admin/users/{id}/2fa-reset" = "auth"
    "ANY /api/admin/users/{id}/sessions"  = "auth"
  }
  api_functions = toset(distinct(values(local.api_routes)))
}

resource "aws_apigatewayv2_api" "admin" {
  name          = "${var.name}-admin"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_integration" "fn" {
  for_each               = local.api_functions
  api_id                 = aws_apigatewayv2_api.admin.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.fn[each.key].invoke_arn
  payload_format_version = "2.0"
}

moved {
  from = aws_apigatewayv2_integration.admin
  to   = aws_apigatewayv2_integration.fn["admin"]
}

resource "aws_apigatewayv2_route" "api" {
  # checkov:skip=CKV_AWS_309:Each function authenticates its callers itself (API keys and session tokens through one role table: admin routes answer 403 to other roles, sign-up and sign-in are public by design); a gateway authorizer would duplicate that check.
  for_each  = local.api_routes
  api_id    = aws_apigatewayv2_api.admin.id
  route_key = each.key
  target    = "integrations/${aws_apigatewayv2_integration.fn[each.value].id}"
}

moved {
  from = aws_apigatewayv2_route.admin
  to   = aws_apigatewayv2_route.api["$default"]
}

resource "aws_cloudwatch_log_group" "admin_api" {
  name              = "/aws/apigateway/${var.name}-admin"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_apigatewayv2_stage" "admin" {
  api_id      = aws_apigatewayv2_api.admin.id
  name        = "$default"
  auto_deploy = true
  default_route_settings {
    throttling_burst_limit = 100
    throttling_rate_limit  = 50
  }
  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.admin_api.arn
    format = jsonencode({
      requestId = "$context.requestId", ip = "$context.identity.sourceIp", method = "$context.httpMethod",
      path      = "$context.path", status = "$context.status", latency = "$context.responseLatency"
    })
  }
}

resource "aws_lambda_permission" "api" {
  for_each      = local.api_functions
  statement_id  = "AllowHttpApi"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.fn[each.key].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.admin.execution_arn}/*/*"
}

moved {
  from = aws_lambda_permission.admin_api
  to   = aws_lambda_permission.api["admin"]
}

# The usage consumer drains the queue, reporting the messages it could not apply.
resource "aws_lambda_event_source_mapping" "usage" {
  event_source_arn                   = aws_sqs_queue.usage.arn
  function_name                      = aws_lambda_function.fn["usage"].arn
  batch_size                         = 100
  maximum_batching_window_in_seconds = 1
  function_response_types            = ["ReportBatchItemFailures"]
}

# The scheduled functions.
resource "aws_cloudwatch_event_rule" "schedule" {
  for_each            = toset(["health", "sweeper"])
  name                = "${var.name}-${each.key}"
  schedule_expression = var.schedule
}

resource "aws_cloudwatch_event_target" "schedule" {
  for_each = aws_cloudwatch_event_rule.schedule
  rule     = each.value.name
  arn      = aws_lambda_function.fn[each.key].arn
}

resource "aws_lambda_permission" "schedule" {
  for_each      = aws_cloudwatch_event_rule.schedule
  statement_id  = "AllowSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.fn[each.key].function_name
  principal     = "events.amazonaws.com"
  source_arn    = each.value.arn
}
