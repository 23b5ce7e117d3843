"""Regenerate web/translations/*/messages.po from the code (maintainers only; the app
compiles the .po files itself). Run: .venv/bin/python web/translations/build_catalogue.py

English is the source language; zh_CN (the default UI language) is translated here.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

HERE = Path(__file__).resolve().parent
WEB = HERE.parent
# Strings used through a variable (_(label)) that extraction cannot see.
DYNAMIC = ["Marking", "Team leader", "Scanning", "Answer keys", "Authority approvals", "Administration",
           "No response", "Off topic", "Illegible", "Refused / crossed out", "Handwriting changes",
           "Identity written", "Special marks", "Suspected copying", "Image illegible", "Wrong image", "Cut off",
           "Blank page", "active", "suspended", "pending_qualification"]

ZH = {
    "This address is not available.": "此地址不可用。",
    "Please log in.": "请先登录。",
    "Two-factor verification is required.": "需要双因素验证。",
    "Your role does not allow this.": "您的角色无权执行此操作。",
    "The form expired or did not come from this site. Reload the page and try again.": "表单已过期或并非来自本站。请刷新页面后重试。",
    "Too many attempts. Wait a minute and try again.": "尝试次数过多，请稍候一分钟再试。",
    "Nothing here: the address is wrong or the item no longer exists.": "未找到：地址有误或内容已不存在。",
    "This action is not available here.": "此处不能执行该操作。",
    "The upload is too large.": "上传文件过大。",
    "Something went wrong on the server. It has been logged; please try again.": "服务器出错，已记录日志，请重试。",
    "Choose an exam specification file.": "请选择考试规格文件。",
    "Imported %(session)s: %(subjects)s subjects, %(items)s items, %(candidates)s candidates.": "已导入 %(session)s：%(subjects)s 个科目，%(items)s 道题，%(candidates)s 名考生。",
    "The specification has errors; nothing was imported.": "规格文件有错误，未导入任何内容。",
    "Choose a CSV file.": "请选择 CSV 文件。",
    "The CSV file has errors; nothing was imported.": "CSV 文件有错误，未导入任何内容。",
    "%(n)s users imported.": "已导入 %(n)s 个用户。",
    "No such user.": "无此用户。",
    "You cannot disable your own account.": "不能停用自己的账号。",
    "Account updated.": "账号已更新。",
    "%(n)s sessions ended.": "已结束 %(n)s 个会话。",
    "Checkpoint written at sequence %(seq)s.": "已在序号 %(seq)s 处写入检查点。",
    "Backup written: %(name)s": "已写入备份：%(name)s",
    "Decision recorded.": "决定已记录。",
    "Too many failed attempts for this account. Try again in %(n)s seconds.": "该账号失败次数过多，请 %(n)s 秒后再试。",
    "Unknown user name or wrong password.": "用户名不存在或密码错误。",
    "That code is not valid. Use the current 6-digit code from your authenticator.": "验证码无效。请使用验证器当前显示的 6 位数字。",
    "That code is not valid. Check the secret in your authenticator and try again.": "验证码无效。请检查验证器中的密钥后重试。",
    "Two-factor sign-in is set up.": "双因素登录已设置。",
    "Unknown language.": "未知语言。",
    "Problem decided.": "问题卷已处理。",
    "Abnormal script decided.": "异常卷已处理。",
    "Re-check dispute decided.": "复查争议已裁定。",
    "Marker suspended.": "评卷员已暂停。",
    "Marker resumed.": "评卷员已恢复。",
    "Batch ingest is not available in this build yet.": "本版本尚不支持批次导入。",
    "Choose a zip, PDF, TIFF or image files (or a folder) to upload.": "请选择 zip、PDF、TIFF 或图像文件（或文件夹）上传。",
    "%(name)s is not a zip, PDF, TIFF or image file.": "%(name)s 不是 zip、PDF、TIFF 或图像文件。",
    "Batch received: %(result)s": "批次已接收：%(result)s",
    "Marking centre": "网上评卷中心",
    "Skip to content": "跳到正文",
    "Log out": "退出",
    "Demo environment: two-factor sign-in is skipped.": "演示环境：已跳过双因素登录。",
    "Saved": "已保存",
    "This response is no longer yours; loading the next one.": "此答卷已不再分配给您，正在加载下一份。",
    "No more responses to mark right now.": "目前没有待评的答卷。",
    "Invalid score": "分数无效",
    "Network problem; retrying.": "网络故障，正在重试。",
    "Live": "实时",
    "Offline": "离线",
    "Hand this response back unmarked?": "不评分退回此答卷？",
    "Problem reported": "已报告问题",
    "Not available": "不可用",
    "Loading…": "加载中…",
    "No scanned image for this response.": "此答卷没有扫描图像。",
    "Maximum": "满分",
    "Step": "给分步长",
    "New score": "新分数",
    "Welcome, %(name)s": "欢迎，%(name)s",
    "Your account has no role yet. Ask an administrator.": "您的账号尚无角色，请联系管理员。",
    "Score changes awaiting the authority": "待考试院审批的分数更改",
    "Note": "备注",
    "Approve": "批准",
    "Reject": "驳回",
    "None pending.": "没有待审批项。",
    "Administration": "系统管理",
    "Ledger verification": "分数账本校验",
    "Authority approvals": "考试院审批",
    "Errors": "错误",
    "One-time passwords (shown once)": "一次性密码（仅显示一次）",
    "Import an exam specification": "导入考试规格",
    "Import": "导入",
    "Import users (CSV)": "导入用户（CSV）",
    "Backups": "备份",
    "No backups yet.": "尚无备份。",
    "Back up now": "立即备份",
    "Results export": "成绩导出",
    "Accounts": "账号",
    "User name": "用户名",
    "Name": "姓名",
    "Roles": "角色",
    "Level": "级别",
    "Online": "在线",
    "Disable": "停用",
    "Enable": "启用",
    "End sessions": "结束会话",
    "Intact": "完整",
    "BROKEN": "已损坏",
    "events": "条记录",
    "Write a checkpoint now": "立即写入检查点",
    "Signed checkpoints": "已签名检查点",
    "None yet.": "暂无。",
    "Log in": "登录",
    "Password": "密码",
    "Your account is personal: never share your password (R-ROLE-4).": "账号仅限本人使用，切勿将密码告诉他人（R-ROLE-4）。",
    "Two-factor sign-in": "双因素登录",
    "6-digit code from your authenticator": "验证器中的 6 位数字",
    "Verify": "验证",
    "Set up two-factor sign-in": "设置双因素登录",
    "Your role requires a second factor. Add this secret to an authenticator app (TOTP, 6 digits, 30 seconds), then type the code it shows.": "您的角色需要第二因素。请将此密钥添加到验证器应用（TOTP，6 位，30 秒），然后输入其显示的数字。",
    "6-digit code": "6 位数字",
    "Confirm": "确认",
    "Back to the start page": "返回首页",
    "Team leader": "学科组长",
    "Items you lead": "您负责的题目",
    "You lead no items.": "您没有负责的题目。",
    "Threshold": "误差阈值",
    "Queues": "队列",
    "Normal": "正常卷",
    "Third marking": "三评卷",
    "Arbitration": "仲裁卷",
    "Re-check": "复查卷",
    "Problem": "问题卷",
    "Abnormal": "异常卷",
    "Disputes": "复查争议",
    "Final": "已出分",
    "Progress": "进度",
    "Arbitrate": "仲裁",
    "Re-check sample": "复查抽样",
    "Extra reads": "加评",
    "Markers": "评卷员",
    "Marker": "评卷员",
    "Status": "状态",
    "Today": "今日",
    "Total": "合计",
    "Per hour": "每小时",
    "Agreement": "一致率",
    "Third-marking rate": "三评率",
    "Resume": "恢复",
    "Suspend": "暂停",
    "Problem responses": "问题卷",
    "Back to marking": "退回评卷",
    "Score": "分数",
    "Set final score": "给定最终分",
    "None open.": "没有待处理项。",
    "Abnormal script register": "异常卷登记",
    "Decide": "裁定",
    "Re-check disputes": "复查争议",
    "final": "终分",
    "re-check": "复查",
    "Decided score (empty keeps the final)": "裁定分数（留空保持原分）",
    "Marking": "评卷",
    "Your items": "您的题目",
    "Subject": "科目",
    "Item": "题目",
    "active": "在岗",
    "suspended": "已暂停",
    "pending_qualification": "待考核",
    "waiting for qualification": "待上岗考核",
    "Start marking": "开始评卷",
    "No items are assigned to you.": "没有分配给您的题目。",
    "Response image": "答卷图像",
    "Fit": "适应",
    "Normal marking": "正常评卷",
    "Extra read": "加评",
    "Item response": "题目作答",
    "Earlier marks": "此前评分",
    "Abnormal (marked anyway, reported to the team leader)": "异常（照常评分，并报告组长）",
    "Submit": "提交",
    "Report a problem instead of a score": "报告问题卷（不评分）",
    "Marking scheme": "评分细则",
    "per hour": "份/小时",
    "Your recent marks": "您最近的评分",
    "Keys: digits and . type the score · Enter submits and loads the next · n/o/i/r condition codes · Alt+1–4 abnormal flags · +/−/f zoom · ] rotate · Esc clears": "按键：数字和 . 输入分数 · 回车提交并加载下一份 · n/o/i/r 特殊代码 · Alt+1–4 异常标记 · +/−/f 缩放 · ] 旋转 · Esc 清除",
    "Batch": "批次",
    "Cards": "答题卡",
    "OMR exceptions": "OMR 异常",
    "Card": "答题卡",
    "Exception resolution with two-person confirmation, spot checks and export appear here when the batch services provide them.": "双人确认的异常处理、抽检和导出将在批次服务提供后显示于此。",
    "Scanning": "扫描",
    "Scanner batches": "扫描批次",
    "Upload a batch": "上传批次",
    "Batch code": "批次编号",
    "Files (zip, PDF, TIFF, images)": "文件（zip、PDF、TIFF、图像）",
    "or a folder": "或文件夹",
    "Upload": "上传",
    "Reads": "识读",
    "Exceptions": "异常",
    "No batches yet.": "尚无批次。",
    "Answer keys": "标准答案",
    "Version": "版本",
    "No answer keys yet.": "尚无标准答案。",
    "Key entry and sign-off by two people (R-OMR-2) appear here when the key workflow service lands.": "标准答案录入及两人以上核签（R-OMR-2）将在相应服务上线后显示于此。",
    "No response": "未作答",
    "Off topic": "离题",
    "Illegible": "字迹无法辨认",
    "Refused / crossed out": "拒答/划去",
    "Handwriting changes": "笔迹变化",
    "Identity written": "写有身份信息",
    "Special marks": "特殊标记",
    "Suspected copying": "疑似雷同",
    "Image illegible": "图像不清",
    "Wrong image": "图像错误",
    "Cut off": "切割不全",
    "Blank page": "空白页",
}


def extract() -> Catalog:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "babel.cfg"
        cfg.write_text("[python: **.py]\n[jinja2: **/templates/**.html]\n")
        pot = Path(tmp) / "messages.pot"
        subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F", str(cfg), "-k", "_",
                        "-k", "gettext", "-o", str(pot), "--no-location", "--omit-header", str(WEB)],
                       check=True, capture_output=True)
        with open(pot, "rb") as handle:
            return read_po(handle)


def main() -> int:
    template = extract()
    ids = [m.id for m in template if m.id] + DYNAMIC
    missing = [i for i in dict.fromkeys(ids) if i not in ZH]
    for locale in ("zh_CN", "en"):
        catalog = Catalog(locale=locale, project="marking-centre", charset="utf-8")
        for msgid in dict.fromkeys(ids):
            catalog.add(msgid, ZH.get(msgid, "") if locale == "zh_CN" else "")
        out = HERE / locale / "LC_MESSAGES" / "messages.po"
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as handle:
            write_po(handle, catalog, sort_output=True, omit_header=False, width=0)
    if missing:
        print("untranslated (zh_CN):", *missing, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
