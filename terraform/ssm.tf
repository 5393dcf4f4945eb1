# Secrets the functions read at cold start (never in their environment).
resource "random_bytes" "secret_key" {
  length = 32
}

resource "aws_ssm_parameter" "secret_key" {
  name        = "/${var.name}/secret-key"
  description = "Seals channel keys at rest (XChaCha20-Poly1305); base64 of 32 bytes."
  type        = "SecureString"
  key_id      = aws_kms_key.main.arn
  value       = random_bytes.secret_key.base64
}

resource "aws_ssm_parameter" "redis_url" {
  name   = "/${var.name}/redis-url"
  type   = "SecureString"
  key_id = aws_kms_key.main.arn
  value  = var.redis_url
}

resource "aws_ssm_parameter" "config" {
  name   = "/${var.name}/config"
  type   = "SecureString"
  key_id = aws_kms_key.main.arn
  value  = var.config_toml
}
