"""A host app whose first migration has other models; the task model comes in
0002 (read from disk by the checks under MIGRATION_MODULES; never applied)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Category",
            fields=[("id", models.BigAutoField(primary_key=True))],
        ),
    ]
