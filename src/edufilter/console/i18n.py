"""The console's texts in Dutch, French, English and German, and the choice among them.

The language follows the browser's Accept-Language, as the block page does, unless the person
picked one (a cookie). Colleagues are addressed formally in Dutch, French and German.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from edufilter.enforce.blockpage import LANGUAGES, choose_language

LANGUAGE_NAMES: Final = {"nl": "Nederlands", "fr": "Français", "en": "English", "de": "Deutsch"}

# key: (nl, fr, en, de)
_TEXTS: Final[dict[str, tuple[str, str, str, str]]] = {
    "console": ("edufilter-console", "Console edufilter", "edufilter console", "edufilter-Konsole"),
    "skip": ("Naar de inhoud", "Aller au contenu", "Skip to content", "Zum Inhalt springen"),
    "main_menu": ("Hoofdmenu", "Menu principal", "Main menu", "Hauptmenü"),
    "language": ("Taal", "Langue", "Language", "Sprache"),
    "choose": ("Kiezen", "Choisir", "Choose", "Wählen"),
    "nav_overview": ("Overzicht", "Vue d'ensemble", "Overview", "Übersicht"),
    "nav_overrides": ("Site openzetten", "Ouvrir un site", "Open a site", "Website freigeben"),
    "nav_check": ("Controleren", "Vérifier", "Check", "Prüfen"),
    "nav_audit": ("Auditlog", "Journal d'audit", "Audit log", "Änderungsprotokoll"),
    "sign_in": ("Aanmelden", "Se connecter", "Sign in", "Anmelden"),
    "sign_out": ("Afmelden", "Se déconnecter", "Sign out", "Abmelden"),
    "token": ("Toegangstoken", "Jeton d'accès", "Access token", "Zugangstoken"),
    "token_hint": (
        "Het token dat u van de ICT-coördinator kreeg (begint met eft_).",
        "Le jeton reçu du coordinateur TIC (il commence par eft_).",
        "The token your ICT coordinator gave you (it starts with eft_).",
        "Das Token, das Sie von der IT-Koordination erhalten haben (beginnt mit eft_).",
    ),
    "signed_in_as": ("Aangemeld als {name} ({role})", "Connecté en tant que {name} ({role})",
                     "Signed in as {name} ({role})", "Angemeldet als {name} ({role})"),
    "bad_token": (
        "Dit token is niet geldig of werd ingetrokken.",
        "Ce jeton n'est pas valide ou a été révoqué.",
        "This token is not valid or has been revoked.",
        "Dieses Token ist ungültig oder wurde widerrufen.",
    ),
    "throttled": (
        "Te veel mislukte aanmeldingen vanaf dit adres. Probeer opnieuw over {seconds} seconden.",
        "Trop d'échecs de connexion depuis cette adresse. Réessayez dans {seconds} secondes.",
        "Too many failed sign-ins from this address. Try again in {seconds} seconds.",
        "Zu viele fehlgeschlagene Anmeldungen von dieser Adresse. Versuchen Sie es in {seconds} Sekunden erneut.",
    ),
    "signed_out": ("U bent afgemeld.", "Vous êtes déconnecté.", "You are signed out.", "Sie sind abgemeldet."),
    "session_ended": (
        "Uw sessie is verlopen; meld u opnieuw aan.",
        "Votre session a expiré ; reconnectez-vous.",
        "Your session has ended; sign in again.",
        "Ihre Sitzung ist abgelaufen; melden Sie sich erneut an.",
    ),
    "forged": (
        "Dit formulier kwam niet van deze console (misschien is de pagina oud). Laad de pagina opnieuw.",
        "Ce formulaire ne vient pas de cette console (la page est peut-être ancienne). Rechargez la page.",
        "This form did not come from this console (the page may be old). Reload the page and try again.",
        "Dieses Formular stammt nicht von dieser Konsole (die Seite ist vielleicht veraltet). Laden Sie sie neu.",
    ),
    "refused": ("Niet uitgevoerd", "Non effectué", "Not done", "Nicht ausgeführt"),
    "error": ("Er ging iets mis", "Une erreur est survenue", "Something went wrong", "Etwas ist schiefgelaufen"),
    "not_allowed": (
        "Uw token mag deze pagina niet gebruiken.",
        "Votre jeton ne permet pas d'utiliser cette page.",
        "Your token may not use this page.",
        "Ihr Token darf diese Seite nicht verwenden.",
    ),
    # Teacher page
    "overrides_title": ("Een site openzetten voor een klas", "Ouvrir un site pour une classe",
                        "Open a site for a class", "Eine Website für eine Klasse freigeben"),
    "group": ("Groep", "Groupe", "Group", "Gruppe"),
    "site": ("Site", "Site", "Site", "Website"),
    "site_hint": (
        "Bijvoorbeeld youtube.com; subdomeinen horen erbij.",
        "Par exemple youtube.com ; les sous-domaines sont inclus.",
        "For example youtube.com; its subdomains are included.",
        "Zum Beispiel youtube.com; Subdomains sind eingeschlossen.",
    ),
    "minutes": ("Minuten", "Minutes", "Minutes", "Minuten"),
    "minutes_hint": ("Hoogstens {max} minuten.", "Au plus {max} minutes.", "At most {max} minutes.",
                     "Höchstens {max} Minuten."),
    "reason": ("Reden (niet verplicht)", "Raison (facultatif)", "Reason (optional)", "Grund (optional)"),
    "open_site": ("Site openzetten", "Ouvrir le site", "Open the site", "Website freigeben"),
    "opened": ("{site} is open voor {group} tot {time}.", "{site} est ouvert pour {group} jusqu'à {time}.",
               "{site} is open for {group} until {time}.", "{site} ist für {group} bis {time} freigegeben."),
    "your_overrides": ("Sites die u openzette", "Sites que vous avez ouverts", "Sites you opened",
                       "Von Ihnen freigegebene Websites"),
    "none_yet": ("Nog geen.", "Aucun pour l'instant.", "None yet.", "Noch keine."),
    "until": ("Tot", "Jusqu'à", "Until", "Bis"),
    "state": ("Toestand", "État", "State", "Zustand"),
    "active": ("actief", "actif", "active", "aktiv"),
    "ended": ("afgelopen", "terminé", "ended", "beendet"),
    "end_now": ("Nu beëindigen", "Terminer maintenant", "End now", "Jetzt beenden"),
    "override_ended": ("De uitzondering is beëindigd.", "L'exception est terminée.", "The override has ended.",
                       "Die Freigabe wurde beendet."),
    "action": ("Actie", "Action", "Action", "Aktion"),
    # Overview
    "overview_title": ("Overzicht", "Vue d'ensemble", "Overview", "Übersicht"),
    "policy": ("Beleid", "Politique", "Policy", "Richtlinie"),
    "policy_version": ("Opgeslagen versie", "Version enregistrée", "Stored version", "Gespeicherte Version"),
    "live_version": ("Actieve versie", "Version active", "Live version", "Aktive Version"),
    "apply_error": ("Laatste fout bij toepassen", "Dernière erreur d'application", "Last apply error",
                    "Letzter Fehler beim Anwenden"),
    "workers": ("Werkprocessen", "Processus de filtrage", "Workers", "Filterprozesse"),
    "worker": ("Werkproces", "Processus", "Worker", "Prozess"),
    "restarts": ("Herstarts", "Redémarrages", "Restarts", "Neustarts"),
    "waiting": ("In de wachtrij", "En file", "Queued now", "In Warteschlange"),
    "dropped": ("Verloren", "Perdus", "Dropped", "Verworfen"),
    "fail_open": ("Ongecontroleerd doorgelaten", "Passés sans contrôle", "Passed uninspected (fail-open)",
                  "Ungeprüft durchgelassen"),
    "no_daemon": ("Hier meldt geen filterdienst zijn toestand.", "Aucun service de filtrage ne signale son état ici.",
                  "No filtering daemon reports its status here.", "Hier meldet kein Filterdienst seinen Zustand."),
    "updated_at": ("Bijgewerkt om", "Mis à jour à", "Updated at", "Aktualisiert um"),
    "blocks_by_category": ("Blokkeringen per categorie", "Blocages par catégorie", "Blocks per category",
                           "Sperren nach Kategorie"),
    "blocks_by_group": ("Blokkeringen per groep", "Blocages par groupe", "Blocks per group", "Sperren nach Gruppe"),
    "period": ("Periode", "Période", "Period", "Zeitraum"),
    "window_1h": ("afgelopen uur", "dernière heure", "last hour", "letzte Stunde"),
    "window_24h": ("afgelopen dag", "dernier jour", "last day", "letzter Tag"),
    "window_7d": ("afgelopen week", "dernière semaine", "last week", "letzte Woche"),
    "no_blocks": ("Geen blokkeringen in deze periode.", "Aucun blocage sur cette période.",
                  "No blocks in this period.", "Keine Sperren in diesem Zeitraum."),
    "group_default": ("(standaard van de groep)", "(défaut du groupe)", "(group default)", "(Gruppenstandard)"),
    "other": ("overige", "autres", "other", "sonstige"),
    "connections": ("verbindingen", "connexions", "connections", "Verbindungen"),
    "latest_events": ("Laatste blokkeringen", "Derniers blocages", "Latest block events", "Letzte Sperren"),
    "time": ("Tijd", "Heure", "Time", "Zeit"),
    "client": ("Toestel (pseudoniem)", "Appareil (pseudonyme)", "Device (pseudonym)", "Gerät (Pseudonym)"),
    "category": ("Categorie", "Catégorie", "Category", "Kategorie"),
    "reference": ("Referentie", "Référence", "Reference", "Referenz"),
    "no_events": ("Geen blokkeringen.", "Aucun blocage.", "No block events.", "Keine Sperren."),
    # Check page
    "check_title": ("Wat krijgt dit toestel voor deze site?", "Que reçoit cet appareil pour ce site ?",
                    "What would this device get for this site?", "Was bekäme dieses Gerät für diese Website?"),
    "target": ("Site of URL", "Site ou URL", "Site or URL", "Website oder URL"),
    "address": ("IP-adres van het toestel", "Adresse IP de l'appareil", "Device IP address",
                "IP-Adresse des Geräts"),
    "mac": ("MAC-adres (niet verplicht)", "Adresse MAC (facultatif)", "MAC address (optional)",
            "MAC-Adresse (optional)"),
    "interface": ("Netwerkinterface (niet verplicht)", "Interface réseau (facultatif)",
                  "Network interface (optional)", "Netzwerkschnittstelle (optional)"),
    "vlan": ("VLAN (niet verplicht)", "VLAN (facultatif)", "VLAN (optional)", "VLAN (optional)"),
    "at": ("Moment (niet verplicht; standaard nu)", "Moment (facultatif ; maintenant par défaut)",
           "At (optional; now by default)", "Zeitpunkt (optional; standardmäßig jetzt)"),
    "check": ("Controleren", "Vérifier", "Check", "Prüfen"),
    "decision": ("Beslissing", "Décision", "Decision", "Entscheidung"),
    "decided_by": ("Beslist door", "Décidé par", "Decided by", "Entschieden durch"),
    "group_match": ("Groep gevonden via", "Groupe trouvé par", "Group found by", "Gruppe gefunden über"),
    "list": ("Lijst of categorie", "Liste ou catégorie", "List or category", "Liste oder Kategorie"),
    "matched": ("Wat overeenkwam", "Correspondance", "What matched", "Treffer"),
    "rule": ("Regel", "Règle", "Rule", "Regel"),
    "schedule_slot": ("Tijdslot", "Plage horaire", "Schedule slot", "Zeitfenster"),
    "decided_version": ("Beleidsversie", "Version de la politique", "Policy version", "Richtlinienversion"),
    "decided_at": ("Beslist voor", "Décidé pour", "Decided for", "Entschieden für"),
    # Policy (read-only for now)
    "nav_policy": ("Beleid", "Politique", "Policy", "Richtlinie"),
    "policy_title": ("Het beleid", "La politique", "The policy", "Die Richtlinie"),
    "read_only_note": (
        "Alleen lezen: wijzigen kan nog via de API of de opdrachtregel.",
        "Lecture seule : les modifications se font encore par l'API ou la ligne de commande.",
        "Read only: changes are made through the API or the command line for now.",
        "Nur lesen: Änderungen erfolgen vorerst über die API oder die Befehlszeile.",
    ),
    "title": ("Titel", "Titre", "Title", "Titel"),
    "default_action": ("Standaardactie", "Action par défaut", "Default action", "Standardaktion"),
    "safe_search": ("Veilig zoeken", "Recherche sécurisée", "Safe search", "Sichere Suche"),
    "quic": ("QUIC", "QUIC", "QUIC", "QUIC"),
    "bypass_shield": ("Omzeilschild", "Bouclier anti-contournement", "Bypass shield", "Umgehungsschutz"),
    "on": ("aan", "activé", "on", "an"),
    "off": ("uit", "désactivé", "off", "aus"),
    "rules_of": ("Regels van {group}, in volgorde", "Règles de {group}, dans l'ordre", "Rules of {group}, in order",
                 "Regeln von {group}, der Reihe nach"),
    "no_rules": ("Geen regels: de standaardactie beslist.", "Aucune règle : l'action par défaut décide.",
                 "No rules: the default action decides.", "Keine Regeln: die Standardaktion entscheidet."),
    "position": ("Plaats", "Position", "Position", "Position"),
    "schedule": ("Rooster", "Horaire", "Schedule", "Zeitplan"),
    "always": ("altijd", "toujours", "always", "immer"),
    "clients": ("Toestellen en netwerken", "Appareils et réseaux", "Devices and networks", "Geräte und Netze"),
    "match": ("Herkend aan", "Reconnu par", "Matched by", "Erkannt an"),
    "admin_lists": ("Lijsten van de school", "Listes de l'école", "The school's lists", "Listen der Schule"),
    "description": ("Beschrijving", "Description", "Description", "Beschreibung"),
    "entries": ("Items", "Entrées", "Entries", "Einträge"),
    "schedules": ("Roosters", "Horaires", "Schedules", "Zeitpläne"),
    "slots": ("Tijdsloten", "Plages", "Slots", "Zeitfenster"),
    "exceptions": ("Uitzonderingen", "Exceptions", "Exceptions", "Ausnahmen"),
    "none": ("geen", "aucun", "none", "keine"),
    "weekdays": ("ma di wo do vr za zo", "lu ma me je ve sa di", "Mon Tue Wed Thu Fri Sat Sun",
                 "Mo Di Mi Do Fr Sa So"),
    # Tokens
    "nav_tokens": ("Tokens", "Jetons", "Tokens", "Tokens"),
    "tokens_title": ("Toegangstokens", "Jetons d'accès", "Access tokens", "Zugangstokens"),
    "name": ("Naam", "Nom", "Name", "Name"),
    "name_hint": ("Kleine letters, cijfers en koppeltekens, bv. ms-peeters.",
                  "Minuscules, chiffres et tirets, par ex. mme-peeters.",
                  "Lower-case letters, digits and hyphens, e.g. ms-peeters.",
                  "Kleinbuchstaben, Ziffern und Bindestriche, z. B. fr-peeters."),
    "role": ("Rol", "Rôle", "Role", "Rolle"),
    "groups": ("Groepen", "Groupes", "Groups", "Gruppen"),
    "groups_hint": ("Alleen voor leerkrachten: de groepen waarvoor ze sites mogen openzetten.",
                    "Pour les enseignants seulement : les groupes pour lesquels ils peuvent ouvrir des sites.",
                    "Teacher tokens only: the groups they may open sites for.",
                    "Nur für Lehrkräfte: die Gruppen, für die sie Websites freigeben dürfen."),
    "max_minutes": ("Hoogstens minuten", "Minutes au plus", "At most minutes", "Höchstens Minuten"),
    "max_minutes_hint": ("Alleen voor leerkrachten; leeg: 60.", "Pour les enseignants seulement ; vide : 60.",
                         "Teacher tokens only; empty: 60.", "Nur für Lehrkräfte; leer: 60."),
    "created": ("Gemaakt", "Créé", "Made", "Erstellt"),
    "make_token": ("Token maken", "Créer le jeton", "Make the token", "Token erstellen"),
    "new_token": ("Nieuw token", "Nouveau jeton", "New token", "Neues Token"),
    "token_once": (
        "Kopieer dit token nu en geef het persoonlijk aan {name}: het wordt maar één keer getoond.",
        "Copiez ce jeton maintenant et remettez-le en personne à {name} : il n'est affiché qu'une fois.",
        "Copy this token now and give it to {name} in person: it is shown only this once.",
        "Kopieren Sie dieses Token jetzt und geben Sie es {name} persönlich: Es wird nur einmal angezeigt.",
    ),
    "revoke": ("Intrekken", "Révoquer", "Revoke", "Widerrufen"),
    "token_revoked": ("Token {name} is ingetrokken.", "Le jeton {name} est révoqué.", "Token {name} is revoked.",
                      "Token {name} ist widerrufen."),
    "revoked": ("ingetrokken", "révoqué", "revoked", "widerrufen"),
    # Audit
    "audit_title": ("Auditlog", "Journal d'audit", "Audit log", "Änderungsprotokoll"),
    "who": ("Wie", "Qui", "Who", "Wer"),
    "what": ("Wat", "Quoi", "What", "Was"),
    "object": ("Object", "Objet", "Object", "Objekt"),
    "no_audit": ("Nog geen wijzigingen.", "Aucune modification.", "No changes yet.", "Noch keine Änderungen."),
    "before_after": ("Voor en na", "Avant et après", "Before and after", "Vorher und nachher"),
    "older": ("Oudere", "Plus anciens", "Older", "Ältere"),
}
_INDEX: Final = {language: index for index, language in enumerate(("nl", "fr", "en", "de"))}
assert set(_INDEX) == set(LANGUAGES)

Translate = Callable[..., str]


def translator(language: str) -> Translate:
    """text(key, **values) in `language`."""
    index = _INDEX[language]

    def text(key: str, **values: object) -> str:
        template = _TEXTS[key][index]
        return template.format(**values) if values else template

    return text


def page_language(chosen: tuple[str | None, ...], accept_language: str | None) -> str:
    """The first language the person chose that is one of ours, else the browser's preference."""
    return next((language for language in chosen if language in LANGUAGES), choose_language(accept_language))
