"""What Python phonenumbers says about every example number in libphonenumber's metadata.

Usage: example_numbers.py   (needs phonenumbers; tests/it/numbering.rs wants 9.0.36, the data namba bundles)
Prints one JSON object: {"version", "numbers": [...], "country_zones": {calling code: [zones]}}.
Each number: the region it is an example of ("001" for non-geographic calling codes), the type asked for,
then e164, number_type, carrier (name_for_number), time_zones (time_zones_for_number), location
(description_for_number), country_name (country_name_for_number), region (region_code_for_number),
national and international formats. Empty strings are printed as null.
"""
import json

import phonenumbers
from phonenumbers import PhoneNumberType, carrier, geocoder, timezone
from phonenumbers.phonenumberutil import (
    COUNTRY_CODE_TO_REGION_CODE,
    COUNTRY_CODES_FOR_NON_GEO_REGIONS,
    PhoneMetadata,
    _number_desc_by_type,
)

TYPES = [
    (name, value)
    for name, value in sorted(vars(PhoneNumberType).items(), key=lambda item: str(item[1]))
    if name.isupper() and isinstance(value, int)
]


def describe(region, asked, number):
    def text(value):
        return value or None

    return {
        "example_of": region,
        "asked_type": asked,
        "e164": phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        "number_type": PhoneNumberType.to_string(phonenumbers.number_type(number)),
        "carrier": text(carrier.name_for_number(number, "en")),
        "time_zones": list(timezone.time_zones_for_number(number)),
        "location": text(geocoder.description_for_number(number, "en")),
        "country_name": text(geocoder.country_name_for_number(number, "en")),
        "region": phonenumbers.region_code_for_number(number),
        "national": phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
        "international": phonenumbers.format_number(
            number, phonenumbers.PhoneNumberFormat.INTERNATIONAL
        ),
    }


def main():
    numbers = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for name, value in TYPES:
            number = phonenumbers.example_number_for_type(region, value)
            if number is not None:
                numbers.append(describe(region, name, number))
    for code in sorted(COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        metadata = PhoneMetadata.metadata_for_nongeo_region(code)
        for name, value in TYPES:
            desc = _number_desc_by_type(metadata, value)
            if desc is None or desc.example_number is None:
                continue
            number = phonenumbers.parse(f"+{code}{desc.example_number}")
            numbers.append(describe("001", name, number))
    # The zones time_zones_for_number gives a number of a non-geographic type: its calling code's.
    country_zones = {
        str(code): list(timezone._country_level_time_zones_for_number(
            phonenumbers.PhoneNumber(country_code=code, national_number=0)
        ))
        for code in sorted(COUNTRY_CODE_TO_REGION_CODE)
    }
    print(json.dumps({
        "version": phonenumbers.__version__,
        "numbers": numbers,
        "country_zones": country_zones,
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
