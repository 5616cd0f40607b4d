from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("testapp", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="Task",
            fields=[("id", models.BigAutoField(primary_key=True))],
        ),
    ]
