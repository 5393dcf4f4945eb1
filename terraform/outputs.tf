output "relay_url" {
  description = "The gateway's base URL: point SDKs at <relay_url>v1."
  value       = aws_lambda_function_url.relay.function_url
}

output "admin_url" {
  description = "The admin API (…/api/admin/…, …/api/account, …/api/usage…, …/api/me/keys…)."
  value       = aws_apigatewayv2_stage.admin.invoke_url
}

output "auth_url" {
  description = "The auth API (…/api/auth/…, …/api/me…): the same HTTP API as admin_url, routed per path (local.api_routes)."
  value       = aws_apigatewayv2_stage.admin.invoke_url
}

output "web_url" {
  description = "The web app."
  value       = "https://${aws_cloudfront_distribution.web.domain_name}"
}

output "web_bucket" {
  description = "Upload the built web app here."
  value       = aws_s3_bucket.web.id
}

output "tables" {
  value = { for k, t in aws_dynamodb_table.t : k => t.name }
}

output "usage_queue_url" {
  value = aws_sqs_queue.usage.url
}

output "usage_dlq_url" {
  value = aws_sqs_queue.usage_dlq.url
}
