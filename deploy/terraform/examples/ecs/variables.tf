variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "environment" {
  type    = string
  default = "prod"
}

variable "name" {
  type    = string
  default = "flowstack"
}

variable "vpc_id" {
  type = string
}

variable "public_subnet_ids" {
  type = list(string)
}

variable "private_subnet_ids" {
  type = list(string)
}

variable "image" {
  type = string
}

variable "ecr_repository_arn" {
  type    = string
  default = null
}

variable "certificate_arn" {
  type = string
}

variable "app_url" {
  type    = string
  default = null
}

variable "admin_email" {
  type    = string
  default = null
}

variable "database_password_parameter_arn" {
  type = string
}

variable "secret_parameter_arns" {
  type = object({
    FLOWISE_PASSWORD            = string
    FLOWISE_SECRETKEY_OVERWRITE = string
    JWT_AUTH_TOKEN_SECRET       = string
    JWT_REFRESH_TOKEN_SECRET    = string
    EXPRESS_SESSION_SECRET      = string
    TOKEN_HASH_SECRET           = string
  })
}

variable "secrets_kms_key_arn" {
  type    = string
  default = null
}

variable "db_multi_az" {
  type    = bool
  default = true
}

variable "desired_count" {
  type    = number
  default = 1
}

variable "enable_worker" {
  type    = bool
  default = false
}

variable "redis_auth_token_parameter_arn" {
  type    = string
  default = null
}

variable "extra_environment" {
  type    = map(string)
  default = {}
}
