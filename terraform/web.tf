# The web app (web/, once built) from a private bucket behind CloudFront,
# which reads it through an origin access control.
resource "aws_s3_bucket" "web" {
  # checkov:skip=CKV_AWS_144:The site is rebuilt from the repository; cross-region replication would copy a cache.
  # checkov:skip=CKV2_AWS_62:Nothing reacts to uploads of static files.
  bucket_prefix = "${var.name}-web-"
}

resource "aws_s3_bucket" "logs" {
  # checkov:skip=CKV_AWS_18:This is the access-log bucket; logging it would log itself.
  # checkov:skip=CKV_AWS_144:Access logs stay in the deployment's region.
  # checkov:skip=CKV2_AWS_62:Nothing reacts to new log files.
  bucket_prefix = "${var.name}-logs-"
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  # checkov:skip=CKV2_AWS_65:CloudFront standard logging writes through the bucket ACL, so the log bucket keeps ACLs enabled (the web bucket has none).
  bucket = aws_s3_bucket.logs.id
  rule {
    # CloudFront standard logging writes through ACLs.
    object_ownership = "BucketOwnerPreferred"
  }
}

resource "aws_s3_bucket_logging" "web" {
  bucket        = aws_s3_bucket.web.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3/"
}

resource "aws_s3_bucket_public_access_block" "b" {
  for_each                = { web = aws_s3_bucket.web.id, logs = aws_s3_bucket.logs.id }
  bucket                  = each.value
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "b" {
  for_each = { web = aws_s3_bucket.web.id, logs = aws_s3_bucket.logs.id }
  bucket   = each.value
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "b" {
  for_each = { web = aws_s3_bucket.web.id, logs = aws_s3_bucket.logs.id }
  bucket   = each.value
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "b" {
  for_each = { web = aws_s3_bucket.web.id, logs = aws_s3_bucket.logs.id }
  bucket   = each.value
  rule {
    id     = "expire-old-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_cloudfront_origin_access_control" "web" {
  name                              = "${var.name}-web"
  origin_access_control_origin_type = "s3"
  signing_behavior                  = "always"
  signing_protocol                  = "sigv4"
}

resource "aws_cloudfront_response_headers_policy" "web" {
  name = "${var.name}-web"
  security_headers_config {
    content_type_options {
      override = true
    }
    frame_options {
      frame_option = "DENY"
      override     = true
    }
    referrer_policy {
      referrer_policy = "strict-origin-when-cross-origin"
      override        = true
    }
    strict_transport_security {
      access_control_max_age_sec = 31536000
      include_subdomains         = true
      preload                    = true
      override                   = true
    }
  }
}

resource "aws_cloudfront_distribution" "web" {
  # checkov:skip=CKV_AWS_68:A WAF web ACL is billed per rule and request; attach one with web_acl_id when the deployment needs it.
  # checkov:skip=CKV_AWS_174:The default *.cloudfront.net certificate fixes the minimum TLS version; set a custom domain and certificate (TLSv1.2_2021) in production.
  # checkov:skip=CKV_AWS_310:One origin (the bucket); there is nothing to fail over to.
  # checkov:skip=CKV_AWS_374:The app serves every country.
  # checkov:skip=CKV2_AWS_47:The Log4j rule set belongs to a WAF web ACL, which is optional here (see CKV_AWS_68).
  # checkov:skip=CKV2_AWS_42:A custom certificate needs a domain the operator owns (see CKV_AWS_174).
  enabled             = true
  default_root_object = "index.html"
  price_class         = "PriceClass_100"

  origin {
    origin_id                = "web"
    domain_name              = aws_s3_bucket.web.bucket_regional_domain_name
    origin_access_control_id = aws_cloudfront_origin_access_control.web.id
  }

  default_cache_behavior {
    target_origin_id           = "web"
    viewer_protocol_policy     = "redirect-to-https"
    allowed_methods            = ["GET", "HEAD"]
    cached_methods             = ["GET", "HEAD"]
    cache_policy_id            = "658327ea-f89d-4fab-a63d-7e88639e58f6" # Managed-CachingOptimized
    response_headers_policy_id = aws_cloudfront_response_headers_policy.web.id
    compress                   = true
  }

  logging_config {
    bucket = aws_s3_bucket.logs.bucket_domain_name
    prefix = "cloudfront/"
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = true
  }
}

data "aws_iam_policy_document" "web" {
  statement {
    sid       = "CloudFrontReads"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.web.arn}/*"]
    principals {
      type        = "Service"
      identifiers = ["cloudfront.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "AWS:SourceArn"
      values   = [aws_cloudfront_distribution.web.arn]
    }
  }
}

resource "aws_s3_bucket_policy" "web" {
  bucket = aws_s3_bucket.web.id
  policy = data.aws_iam_policy_document.web.json
}
