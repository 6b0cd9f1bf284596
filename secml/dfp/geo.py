"""Country centroids for DFP's travel features, from the log's own location fields.

Neither Duo nor Azure AD sign-in logs can be trusted to carry coordinates (Duo never does), so
travel distance and local solar time are taken from a static table of approximate country
centroids keyed by ISO 3166 alpha-2 code and by English name. No network lookups.
A country that is not in the table has no coordinates: travel speed is then 0 and the hour
features use UTC.
"""

from __future__ import annotations

import math

# code: (name, latitude, longitude); approximate centroids of the populated area.
_COUNTRIES: dict[str, tuple[str, float, float]] = {
    "AE": ("United Arab Emirates", 24.4, 54.4),
    "AF": ("Afghanistan", 34.5, 69.2),
    "AL": ("Albania", 41.3, 19.8),
    "AM": ("Armenia", 40.2, 44.5),
    "AO": ("Angola", -8.8, 13.2),
    "AR": ("Argentina", -34.6, -58.4),
    "AT": ("Austria", 48.2, 16.4),
    "AU": ("Australia", -33.0, 147.0),
    "AZ": ("Azerbaijan", 40.4, 49.9),
    "BA": ("Bosnia and Herzegovina", 43.9, 18.4),
    "BD": ("Bangladesh", 23.8, 90.4),
    "BE": ("Belgium", 50.8, 4.4),
    "BG": ("Bulgaria", 42.7, 23.3),
    "BH": ("Bahrain", 26.2, 50.6),
    "BO": ("Bolivia", -16.5, -68.1),
    "BR": ("Brazil", -22.0, -46.0),
    "BY": ("Belarus", 53.9, 27.6),
    "CA": ("Canada", 45.5, -79.0),
    "CH": ("Switzerland", 46.9, 8.0),
    "CL": ("Chile", -33.4, -70.6),
    "CN": ("China", 33.0, 113.0),
    "CO": ("Colombia", 4.7, -74.1),
    "CR": ("Costa Rica", 9.9, -84.1),
    "CY": ("Cyprus", 35.2, 33.4),
    "CZ": ("Czechia", 50.1, 14.4),
    "DE": ("Germany", 51.0, 10.0),
    "DK": ("Denmark", 55.7, 12.6),
    "DO": ("Dominican Republic", 18.5, -69.9),
    "DZ": ("Algeria", 36.7, 3.1),
    "EC": ("Ecuador", -0.2, -78.5),
    "EE": ("Estonia", 59.4, 24.7),
    "EG": ("Egypt", 30.0, 31.2),
    "ES": ("Spain", 40.4, -3.7),
    "ET": ("Ethiopia", 9.0, 38.7),
    "FI": ("Finland", 60.2, 24.9),
    "FR": ("France", 46.6, 2.4),
    "GB": ("United Kingdom", 52.5, -1.5),
    "GE": ("Georgia", 41.7, 44.8),
    "GH": ("Ghana", 5.6, -0.2),
    "GR": ("Greece", 38.0, 23.7),
    "GT": ("Guatemala", 14.6, -90.5),
    "HK": ("Hong Kong", 22.3, 114.2),
    "HR": ("Croatia", 45.8, 16.0),
    "HU": ("Hungary", 47.5, 19.0),
    "ID": ("Indonesia", -6.2, 106.8),
    "IE": ("Ireland", 53.3, -6.3),
    "IL": ("Israel", 32.1, 34.8),
    "IN": ("India", 21.0, 78.0),
    "IQ": ("Iraq", 33.3, 44.4),
    "IR": ("Iran", 35.7, 51.4),
    "IS": ("Iceland", 64.1, -21.9),
    "IT": ("Italy", 42.8, 12.5),
    "JM": ("Jamaica", 18.0, -76.8),
    "JO": ("Jordan", 31.9, 35.9),
    "JP": ("Japan", 36.0, 138.0),
    "KE": ("Kenya", -1.3, 36.8),
    "KH": ("Cambodia", 11.6, 104.9),
    "KP": ("North Korea", 39.0, 125.8),
    "KR": ("South Korea", 37.0, 127.5),
    "KW": ("Kuwait", 29.4, 48.0),
    "KZ": ("Kazakhstan", 48.0, 68.0),
    "LB": ("Lebanon", 33.9, 35.5),
    "LK": ("Sri Lanka", 6.9, 79.9),
    "LT": ("Lithuania", 54.7, 25.3),
    "LU": ("Luxembourg", 49.6, 6.1),
    "LV": ("Latvia", 56.9, 24.1),
    "MA": ("Morocco", 33.6, -7.6),
    "MD": ("Moldova", 47.0, 28.9),
    "MM": ("Myanmar", 16.8, 96.2),
    "MN": ("Mongolia", 47.9, 106.9),
    "MT": ("Malta", 35.9, 14.5),
    "MX": ("Mexico", 21.0, -100.0),
    "MY": ("Malaysia", 3.1, 101.7),
    "NG": ("Nigeria", 8.0, 6.0),
    "NL": ("Netherlands", 52.2, 5.3),
    "NO": ("Norway", 60.5, 9.0),
    "NP": ("Nepal", 27.7, 85.3),
    "NZ": ("New Zealand", -40.0, 174.0),
    "OM": ("Oman", 23.6, 58.4),
    "PA": ("Panama", 9.0, -79.5),
    "PE": ("Peru", -12.0, -77.0),
    "PH": ("Philippines", 14.6, 121.0),
    "PK": ("Pakistan", 30.0, 70.0),
    "PL": ("Poland", 52.0, 19.5),
    "PR": ("Puerto Rico", 18.2, -66.5),
    "PT": ("Portugal", 39.5, -8.5),
    "PY": ("Paraguay", -25.3, -57.6),
    "QA": ("Qatar", 25.3, 51.5),
    "RO": ("Romania", 45.9, 25.0),
    "RS": ("Serbia", 44.8, 20.5),
    "RU": ("Russia", 55.8, 37.6),
    "SA": ("Saudi Arabia", 24.0, 45.0),
    "SE": ("Sweden", 59.3, 18.1),
    "SG": ("Singapore", 1.35, 103.8),
    "SI": ("Slovenia", 46.1, 14.5),
    "SK": ("Slovakia", 48.7, 19.7),
    "SN": ("Senegal", 14.7, -17.4),
    "TH": ("Thailand", 13.8, 100.5),
    "TN": ("Tunisia", 36.8, 10.2),
    "TR": ("Turkey", 39.5, 32.0),
    "TW": ("Taiwan", 24.0, 121.0),
    "TZ": ("Tanzania", -6.8, 39.3),
    "UA": ("Ukraine", 49.0, 31.0),
    "UG": ("Uganda", 0.3, 32.6),
    "US": ("United States", 39.0, -95.0),
    "UY": ("Uruguay", -34.9, -56.2),
    "UZ": ("Uzbekistan", 41.3, 69.3),
    "VE": ("Venezuela", 10.5, -66.9),
    "VN": ("Vietnam", 16.0, 106.0),
    "ZA": ("South Africa", -29.0, 25.0),
    "ZW": ("Zimbabwe", -17.8, 31.0),
}
_ALIASES: dict[str, str] = {
    "usa": "US",
    "united states of america": "US",
    "uk": "GB",
    "great britain": "GB",
    "england": "GB",
    "russian federation": "RU",
    "korea, republic of": "KR",
    "republic of korea": "KR",
    "czech republic": "CZ",
    "türkiye": "TR",
    "turkiye": "TR",
    "viet nam": "VN",
    "uae": "AE",
}
_BY_NAME: dict[str, str] = {name.lower(): code for code, (name, _, _) in _COUNTRIES.items()}
_BY_NAME.update(_ALIASES)

EARTH_RADIUS_KM = 6371.0


def country_code(country: str | None) -> str | None:
    """ISO alpha-2 code of a country given by code or English name, None when unknown."""
    if not country:
        return None
    text = str(country).strip()
    if len(text) == 2 and text.upper() in _COUNTRIES:
        return text.upper()
    return _BY_NAME.get(text.lower())


def centroid(country: str | None) -> tuple[float, float] | None:
    """(latitude, longitude) of a country's centroid, None when the country is unknown."""
    code = country_code(country)
    if code is None:
        return None
    _, lat, lon = _COUNTRIES[code]
    return lat, lon


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in km between two (lat, lon) points."""
    lat1, lon1 = map(math.radians, a)
    lat2, lon2 = map(math.radians, b)
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
