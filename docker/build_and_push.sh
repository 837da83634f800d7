#!/usr/bin/env bash
# Build the trainer image, push it to Amazon ECR and print the digest-pinned URI to paste into a
# recipe's `job.image_uri` (SageMaker and `require_image_digest` want <repo>@sha256:<digest>).
#
#   docker/build_and_push.sh [--dry-run] [--region R] [--account ID] [--repository NAME]
#                            [--tag TAG] [--build-arg KEY=VALUE]...
#
# --dry-run prints the commands instead of running them (no AWS or Docker needed).
# Defaults: region from AWS_REGION / AWS_DEFAULT_REGION, account from `aws sts
# get-caller-identity`, repository mtgrpo-trainer, tag = git commit (+ -dirty).
set -euo pipefail

cd "$(dirname "$0")/.."

dry_run=0
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
account=""
repository="mtgrpo-trainer"
tag=""
build_args=()

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) dry_run=1; shift ;;
        --region) region="$2"; shift 2 ;;
        --account) account="$2"; shift 2 ;;
        --repository) repository="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --build-arg) build_args+=(--build-arg "$2"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

if [[ -z "$region" ]]; then
    echo "error: no region: pass --region or set AWS_REGION" >&2
    exit 2
fi
# The base, pinned by digest (docker/base-image.txt): a tag could move under the build.
base="$(grep -v '^#' docker/base-image.txt | grep -v '^[[:space:]]*$' | tail -n1)"
if [[ ! "$base" =~ @sha256:[0-9a-f]{64}$ ]]; then
    if [[ $dry_run -eq 1 ]]; then
        base="${base%@*}@sha256:<digest-of-docker/base-image.txt>"
    else
        echo "error: docker/base-image.txt: ${base:-nothing} is not pinned by digest" \
             "(allowed: <image>:<tag>@sha256:<64 hex digits>; see the file's comment)" >&2
        exit 2
    fi
fi

if [[ -z "$tag" ]]; then
    tag="$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)"
    if [[ -n "$(git status --porcelain -- mtgrpo docker Dockerfile pyproject.toml 2>/dev/null)" ]]; then
        tag="${tag}-dirty"
    fi
fi
if [[ -z "$account" ]]; then
    if [[ $dry_run -eq 1 ]]; then
        account="<account>"
    else
        account="$(aws sts get-caller-identity --query Account --output text)"
    fi
fi

registry="${account}.dkr.ecr.${region}.amazonaws.com"
image="${registry}/${repository}"

run() {
    if [[ $dry_run -eq 1 ]]; then
        printf '%q ' "$@"
        printf '\n'
    else
        "$@"
    fi
}

if [[ $dry_run -eq 1 ]]; then
    echo "aws ecr describe-repositories --region $region --repository-names $repository" \
         "|| aws ecr create-repository --region $region --repository-name $repository" \
         "--image-scanning-configuration scanOnPush=true"
    echo "aws ecr get-login-password --region $region | docker login --username AWS" \
         "--password-stdin $registry"
else
    aws ecr describe-repositories --region "$region" --repository-names "$repository" \
        >/dev/null 2>&1 \
      || aws ecr create-repository --region "$region" --repository-name "$repository" \
           --image-scanning-configuration scanOnPush=true >/dev/null
    aws ecr get-login-password --region "$region" \
      | docker login --username AWS --password-stdin "$registry"
fi

# SageMaker instances are x86_64.
run docker build --platform linux/amd64 --build-arg "BASE_IMAGE=${base}" \
    ${build_args[@]+"${build_args[@]}"} -f Dockerfile -t "${image}:${tag}" .
run docker push "${image}:${tag}"

if [[ $dry_run -eq 1 ]]; then
    echo "image_uri: ${image}@sha256:<digest printed by docker push>"
else
    # The registry's digest of what was just pushed (RepoDigests holds <repo>@sha256:<digest>).
    pinned="$(docker inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' \
              "${image}:${tag}" | grep "^${image}@sha256:" | head -n1)"
    if [[ -z "$pinned" ]]; then
        echo "error: no digest for ${image}:${tag} after push" >&2
        exit 1
    fi
    echo "image_uri: ${pinned}"
fi
