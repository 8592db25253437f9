"""Reference data: country codes and country groups. Plain data, no I/O."""

from __future__ import annotations

# Every ISO 3166-1 alpha-2 code currently assigned (249). Kept as one string so a
# missing or doubled code is easy to spot by eye, one initial letter per line.
ISO_COUNTRIES: frozenset[str] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ
    BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ
    DE DJ DK DM DO DZ
    EC EE EG EH ER ES ET
    FI FJ FK FM FO FR
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY
    HK HM HN HR HT HU
    ID IE IL IM IN IO IQ IR IS IT
    JE JM JO JP
    KE KG KH KI KM KN KP KR KW KY KZ
    LA LB LC LI LK LR LS LT LU LV LY
    MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ
    NA NC NE NF NG NI NL NO NP NR NU NZ
    OM
    PA PE PF PG PH PK PL PM PN PR PS PT PW PY
    QA
    RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ
    TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ
    UA UG UM US UY UZ
    VA VC VE VG VI VN VU
    WF WS
    YE YT
    ZA ZM ZW
    """.split()
)

# The 27 member states. Greece is GR in ISO 3166 even though EU documents write EL.
EU_MEMBERS: frozenset[str] = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR IE IT LV LT LU MT NL PL PT RO SK SI ES SE HU".split()
)

# Codes people write that ISO does not assign; a config error then names the right one.
COMMON_MISTAKES: dict[str, str] = {
    "UK": "GB",  # the United Kingdom is GB in ISO 3166
    "EL": "GR",  # the EU's own code for Greece
}


# Cloud regions and the country each one sits in (ISO 3166 alpha-2). Residency is decided by
# these facts, so they are written out here and cross-checked in tests/test_catalog.py against
# an independent table; a region not listed is refused in config rather than guessed.
AWS_REGIONS: dict[str, str] = {
    "af-south-1": "ZA", "ap-east-1": "HK", "ap-east-2": "TW", "ap-northeast-1": "JP",
    "ap-northeast-2": "KR", "ap-northeast-3": "JP", "ap-south-1": "IN", "ap-south-2": "IN",
    "ap-southeast-1": "SG", "ap-southeast-2": "AU", "ap-southeast-3": "ID", "ap-southeast-4": "AU",
    "ap-southeast-5": "MY", "ap-southeast-6": "NZ", "ap-southeast-7": "TH", "ca-central-1": "CA",
    "ca-west-1": "CA", "cn-north-1": "CN", "cn-northwest-1": "CN", "eu-central-1": "DE",
    "eu-central-2": "CH", "eu-north-1": "SE", "eu-south-1": "IT", "eu-south-2": "ES",
    "eu-west-1": "IE", "eu-west-2": "GB", "eu-west-3": "FR", "eusc-de-east-1": "DE",
    "il-central-1": "IL", "me-central-1": "AE", "me-south-1": "BH", "mx-central-1": "MX",
    "sa-east-1": "BR", "us-east-1": "US", "us-east-2": "US", "us-gov-east-1": "US",
    "us-gov-west-1": "US", "us-west-1": "US", "us-west-2": "US",
}

GCP_REGIONS: dict[str, str] = {
    "africa-south1": "ZA", "asia-east1": "TW", "asia-east2": "HK", "asia-northeast1": "JP",
    "asia-northeast2": "JP", "asia-northeast3": "KR", "asia-south1": "IN", "asia-south2": "IN",
    "asia-southeast1": "SG", "asia-southeast2": "ID", "australia-southeast1": "AU",
    "australia-southeast2": "AU", "europe-central2": "PL", "europe-north1": "FI",
    "europe-north2": "SE", "europe-southwest1": "ES", "europe-west1": "BE", "europe-west10": "DE",
    "europe-west12": "IT", "europe-west2": "GB", "europe-west3": "DE", "europe-west4": "NL",
    "europe-west6": "CH", "europe-west8": "IT", "europe-west9": "FR", "me-central1": "QA",
    "me-central2": "SA", "me-west1": "IL", "northamerica-northeast1": "CA",
    "northamerica-northeast2": "CA", "northamerica-south1": "MX", "southamerica-east1": "BR",
    "southamerica-west1": "CL", "us-central1": "US", "us-east1": "US", "us-east4": "US",
    "us-east5": "US", "us-south1": "US", "us-west1": "US", "us-west2": "US", "us-west3": "US",
    "us-west4": "US",
}

CLOUD_REGIONS = {"aws": AWS_REGIONS, "gcp": GCP_REGIONS}


def region_country(provider: str, region: str) -> str | None:
    return CLOUD_REGIONS.get(provider, {}).get(region)
