variable "name" {
  description = "Deployment name; prefixes every resource (tables are \"<name>-users\", …)."
  type        = string
  default     = "oblivious"
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "artifacts_dir" {
  description = "Where `scripts/build-lambdas` left one <function>/bootstrap.zip per function."
  type        = string
  default     = "../target/lambda"
}

variable "architecture" {
  description = "Lambda architecture the zips were built for: arm64 or x86_64."
  type        = string
  default     = "arm64"
}

variable "redis_url" {
  description = "Hot state: a Redis URL (rediss:// for Upstash or ElastiCache with TLS). Stored in SSM as a SecureString."
  type        = string
  sensitive   = true
}

variable "config_toml" {
  description = "The gateway config (relay settings, rate limits, alerts, and the channels, groups and prices the admin function syncs). Stored in SSM as a SecureString."
  type        = string
  default     = "[prices.\"*\"]\nfree = true\n"
  sensitive   = true
}

variable "log_retention_days" {
  description = "CloudWatch log retention."
  type        = number
  default     = 365
}

variable "relay_memory_mb" {
  description = "Memory (and so CPU) of the relay function."
  type        = number
  default     = 512
}

variable "relay_concurrency" {
  description = "Reserved concurrency of the relay function (a ceiling against runaway cost)."
  type        = number
  default     = 200
}

variable "schedule" {
  description = "How often the health check and the reservation sweeper run."
  type        = string
  default     = "rate(1 minute)"
}

variable "alarm_topic_arn" {
  description = "SNS topic notified when usage jobs land in the dead-letter queue (empty: the alarm only shows in CloudWatch)."
  type        = string
  default     = ""
}
