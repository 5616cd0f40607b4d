"""A host module whose import fails with something other than ImportError.

``manage.py check`` must report the setting naming it (E040), not crash.
"""

from django.core.exceptions import ImproperlyConfigured

raise ImproperlyConfigured("this hook needs a setting of its own")
