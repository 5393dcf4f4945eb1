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

# A usage job the consumer could not apply in `max_receives` tries is parked
# in the dead-letter queue, never retried forever: this alarm makes it seen.
resource "aws_cloudwatch_metric_alarm" "usage_dead_letters" {
  alarm_name          = "${var.name}-usage-dead-letters"
  alarm_description   = "Usage jobs in the dead-letter queue: their settlement could not be applied."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.usage_dlq.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_topic_arn == "" ? [] : [var.alarm_topic_arn]
}
