# The notification's link to an escrow payment lives in its own migration:
# the package's first migration depends on this app's first one (the task
# model), so 0001 must not reference any escrow model.

import django.db.models.deletion
import swapper
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("marketplace", "0001_initial"),
        swapper.dependency("escrow_connect", "EscrowPayment"),
    ]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="payment",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=swapper.get_model_name("escrow_connect", "EscrowPayment"),
            ),
        ),
    ]
