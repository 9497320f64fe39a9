# Values the mocked AWS provider returns for computed attributes, during plan
# too (override_during = plan in the test files): without them the DB
# address and ARNs would be unknown at plan time and the container
# definitions could not be decoded in assertions.

mock_resource "aws_db_instance" {
  defaults = {
    address  = "flowstack.abcdefgh.eu-west-1.rds.amazonaws.com"
    endpoint = "flowstack.abcdefgh.eu-west-1.rds.amazonaws.com:5432"
    port     = 5432
    arn      = "arn:aws:rds:eu-west-1:123456789012:db:flowstack"
  }
}

mock_resource "aws_cloudwatch_log_group" {
  defaults = {
    arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/flowstack"
  }
}

mock_resource "aws_efs_file_system" {
  defaults = {
    id  = "fs-0123456789abcdef0"
    arn = "arn:aws:elasticfilesystem:eu-west-1:123456789012:file-system/fs-0123456789abcdef0"
  }
}

mock_resource "aws_efs_access_point" {
  defaults = {
    id  = "fsap-0123456789abcdef0"
    arn = "arn:aws:elasticfilesystem:eu-west-1:123456789012:access-point/fsap-0123456789abcdef0"
  }
}

mock_resource "aws_iam_role" {
  defaults = {
    arn = "arn:aws:iam::123456789012:role/flowstack-mock"
  }
}

mock_resource "aws_ssm_parameter" {
  defaults = {
    arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/flowstack/redis-url"
  }
}

mock_resource "aws_elasticache_replication_group" {
  defaults = {
    primary_endpoint_address = "master.flowstack-redis.abcdef.euw1.cache.amazonaws.com"
  }
}

mock_resource "aws_ecs_task_definition" {
  defaults = {
    arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/flowstack:1"
  }
}

mock_resource "aws_lb" {
  defaults = {
    arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/flowstack/0123456789abcdef"
  }
}

mock_resource "aws_lb_target_group" {
  defaults = {
    arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/flowstack-tg/0123456789abcdef"
  }
}

mock_data "aws_region" {
  defaults = {
    name = "eu-west-1"
  }
}

mock_data "aws_ssm_parameter" {
  defaults = {
    value = "mock-Secret-value-1234567890"
  }
}
