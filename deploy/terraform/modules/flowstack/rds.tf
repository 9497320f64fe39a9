# RDS PostgreSQL 15. The master password is an SSM SecureString the caller
# creates (var.database_password_parameter_arn); the tasks' DATABASE_PASSWORD
# is the same parameter (secrets/valueFrom), so the two cannot drift apart.
# Not manage_master_user_password: RDS would rotate that password in Secrets
# Manager every 7 days, and Flowise reads DATABASE_PASSWORD once, at start:
# every running task would fail on its next new connection.

data "aws_ssm_parameter" "database_password" {
  name            = var.database_password_parameter_arn
  with_decryption = true
}

resource "aws_db_subnet_group" "main" {
  name       = var.name
  subnet_ids = var.private_subnet_ids
  tags       = local.tags
}

resource "aws_db_parameter_group" "main" {
  name_prefix = "${var.name}-pg15-"
  family      = "postgres15"

  # TLS required only when the tasks verify the server (the CA bundle given).
  parameter {
    name  = "rds.force_ssl"
    value = var.database_ca_bundle_parameter_arn == null ? "0" : "1"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_instance" "main" {
  #checkov:skip=CKV_AWS_118:enhanced (OS-level) monitoring needs an extra IAM role and costs per instance; CloudWatch metrics and Performance Insights cover Flowise's load
  #checkov:skip=CKV_AWS_354:Performance Insights uses var.db_kms_key_arn when given, else the AWS managed key
  #checkov:skip=CKV2_AWS_30:statement logging is set in the parameter group (log_min_duration_statement, log_statement); checkov only sees it with pgaudit
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class

  db_name  = var.db_name
  username = var.db_username
  password = data.aws_ssm_parameter.database_password.value
  port     = 5432

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = var.db_kms_key_arn

  multi_az               = var.db_multi_az
  db_subnet_group_name   = aws_db_subnet_group.main.name
  vpc_security_group_ids = [aws_security_group.rds.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.main.name

  backup_retention_period   = var.db_backup_retention_days
  copy_tags_to_snapshot     = true
  deletion_protection       = var.db_deletion_protection
  skip_final_snapshot       = !var.db_deletion_protection
  final_snapshot_identifier = "${var.name}-final"

  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
  monitoring_interval                 = 0

  performance_insights_enabled          = var.db_performance_insights
  performance_insights_kms_key_id       = var.db_performance_insights ? var.db_kms_key_arn : null
  performance_insights_retention_period = var.db_performance_insights ? 7 : null

  tags = local.tags
}
