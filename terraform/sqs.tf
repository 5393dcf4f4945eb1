# Usage (and webhook) jobs from the relay to the usage consumer. A message
# that fails `max_receives` times moves to the dead-letter queue.
locals {
  max_receives = 5
}

resource "aws_sqs_queue" "usage_dlq" {
  name                      = "${var.name}-usage-dlq"
  message_retention_seconds = 1209600
  kms_master_key_id         = aws_kms_key.main.arn
}

resource "aws_sqs_queue" "usage" {
  name                       = "${var.name}-usage"
  visibility_timeout_seconds = 180 # ≥ 6 × the consumer's timeout, as AWS advises for event source mappings
  message_retention_seconds  = 1209600
  kms_master_key_id          = aws_kms_key.main.arn
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.usage_dlq.arn
    maxReceiveCount     = local.max_receives
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "usage_dlq" {
  queue_url = aws_sqs_queue.usage_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.usage.arn]
  })
}
