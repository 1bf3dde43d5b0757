"""Where SageMaker's Triton image lives in each region.

AWS publishes ``sagemaker-tritonserver`` from one ECR account per region, as listed in
SageMaker's Triton documentation and example notebooks (e.g. amazon-sagemaker-examples,
sagemaker-triton/*: ``account_id_map``). Regions missing here: pass ``--image`` with the full URI.
"""

from __future__ import annotations

from mmesim.errors import ConfigError

# The reference measurements (shared/reference/mme-gpu-blog) used this tag.
DEFAULT_TAG = "22.10-py3"

TRITON_IMAGE_ACCOUNTS: dict[str, str] = {
    "us-east-1": "785573368785",
    "us-east-2": "007439368137",
    "us-west-1": "710691900526",
    "us-west-2": "301217895009",
    "eu-west-1": "802834080501",
    "eu-west-2": "205493899709",
    "eu-west-3": "254080097072",
    "eu-north-1": "601324751636",
    "eu-south-1": "966458181534",
    "eu-central-1": "746233611703",
    "ap-east-1": "110948597952",
    "ap-south-1": "763008648453",
    "ap-northeast-1": "941853720454",
    "ap-northeast-2": "151534178276",
    "ap-southeast-1": "324986816169",
    "ap-southeast-2": "355873309152",
    "cn-northwest-1": "474822919863",
    "cn-north-1": "472730292857",
    "sa-east-1": "756306329178",
    "ca-central-1": "464438896020",
    "me-south-1": "836785723513",
    "af-south-1": "774647643957",
}


def triton_image_uri(region: str, tag: str = DEFAULT_TAG) -> str:
    """The SageMaker Triton image for ``region``, e.g. 785573368785.dkr.ecr.us-east-1.amazonaws.com/
    sagemaker-tritonserver:22.10-py3."""
    account = TRITON_IMAGE_ACCOUNTS.get(region)
    if account is None:
        raise ConfigError(f"no SageMaker Triton image account known for this region (known: "
                          f"{', '.join(sorted(TRITON_IMAGE_ACCOUNTS))}); give the image URI with --image",
                          field="--region", value=region)
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/sagemaker-tritonserver:{tag}"
