# The data volume (/var/lib/flowstack): Flowise's HOME (encryption.key unless
# FLOWISE_SECRETKEY_OVERWRITE is set, which this module always does), blobs,
# uploads and file logs. Encrypted at rest and in transit, mounted through an
# access point as uid/gid 1000 (node) with IAM authorization.

resource "aws_efs_file_system" "data" {
  creation_token   = "${var.name}-data"
  encrypted        = true
  kms_key_id       = var.efs_kms_key_arn
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic"

  lifecycle_policy {
    transition_to_ia = "AFTER_30_DAYS"
  }

  tags = merge(local.tags, { Name = "${var.name}-data" })
}

resource "aws_efs_backup_policy" "data" {
  file_system_id = aws_efs_file_system.data.id

  backup_policy {
    status = "ENABLED"
  }
}

resource "aws_efs_mount_target" "data" {
  for_each        = toset(var.private_subnet_ids)
  file_system_id  = aws_efs_file_system.data.id
  subnet_id       = each.value
  security_groups = [aws_security_group.efs.id]
}

# Every client is uid/gid 1000 under /flowstack, whatever its own uid: the
# data-dirs unit (root in the container) creates and chowns
# FLOWSTACK_DATA/flowise to node (1000), which is then a no-op.
resource "aws_efs_access_point" "data" {
  file_system_id = aws_efs_file_system.data.id

  posix_user {
    uid = local.node_uid
    gid = local.node_uid
  }

  root_directory {
    path = "/flowstack"
    creation_info {
      owner_uid   = local.node_uid
      owner_gid   = local.node_uid
      permissions = "0750"
    }
  }

  tags = merge(local.tags, { Name = "${var.name}-data" })
}

# Only the task role, only through the access point, only over TLS.
resource "aws_efs_file_system_policy" "data" {
  file_system_id = aws_efs_file_system.data.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "TaskRoleThroughAccessPoint"
        Effect    = "Allow"
        Principal = { AWS = aws_iam_role.task.arn }
        Action    = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
        Resource  = aws_efs_file_system.data.arn
        Condition = {
          StringEquals = { "elasticfilesystem:AccessPointArn" = aws_efs_access_point.data.arn }
          Bool         = { "elasticfilesystem:AccessedViaMountTarget" = "true" }
        }
      },
      {
        Sid       = "DenyWithoutTLS"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = "*"
        Resource  = aws_efs_file_system.data.arn
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
    ]
  })
}
